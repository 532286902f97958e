/* metrics — the daemon's /metrics page (metrics.h): one family per figure
 * of the engine, the API, the consumer, the server and the checkpoints. */
#include "recalld/metrics.h"

#include <stdio.h>
#include <unistd.h>

#include "metrics_int.h"
#include "recalld/common.h"
#include "recalld/index.h"
#include "recalld/table.h"

static void counter(rc_buf *b, const char *name, const char *help, uint64_t v)
{
    rc_prom_family(b, name, "counter", help);
    rc_prom_sample_u64(b, name, NULL, v);
}

static void gauge(rc_buf *b, const char *name, const char *help, double v)
{
    rc_prom_family(b, name, "gauge", help);
    rc_prom_sample(b, name, NULL, v);
}

static void render_events(rc_buf *b, rc_engine *e)
{
    rc_engine_counters c;
    char lab[64];
    rc_engine_counters_get(e, &c);
    counter(b, "recalld_events_consumed_total", "Kafka messages handed to the engine.", c.consumed);
    counter(b, "recalld_events_applied_total", "Valid click events applied to the model.",
            c.applied);
    rc_prom_family(b, "recalld_events_invalid_total", "counter",
                   "Refused events (dead-lettered), by reason.");
    for (int r = 1; r < RC_EV_REASON_COUNT; r++) {
        snprintf(lab, sizeof lab, "reason=\"%s\"", rc_event_reason_name((enum rc_event_reason)r));
        rc_prom_sample_u64(b, "recalld_events_invalid_total", lab, c.invalid[r]);
    }
    counter(b, "recalld_events_ignored_total", "Valid events of a type other than click.",
            c.ignored);
    counter(b, "recalld_events_rejected_capacity_total",
            "Valid events not applied because a configured bound was reached.",
            c.rejected_capacity);
    counter(b, "recalld_events_lost_total",
            "Events deleted from Kafka (retention) before recalld read them.", c.lost);
    counter(b, "recalld_training_pairs_total", "SGNS (context, target) pairs trained.", c.pairs);
    counter(b, "recalld_items_created_total", "Items created by the stream.", c.new_items);
    gauge(b, "recalld_items", "Rows of the item table.", rc_table_size(rc_engine_table(e)));
    rc_prom_family(b, "recalld_freshness_seconds", "histogram",
                   "Time from a batch being consumed to its events applied and the index "
                   "flushed.");
    rc_prom_hist(b, "recalld_freshness_seconds", NULL, rc_engine_freshness(e));
}

static void render_index(rc_buf *b, rc_engine *e)
{
    rc_index_stats is;
    rc_index_stats_get(rc_engine_index(e), &is);
    gauge(b, "recalld_index_size", "Rows searchable in the live index.", (double)is.size);
    gauge(b, "recalld_index_partitions", "Index partitions (city, category).",
          (double)is.partitions);
    gauge(b, "recalld_index_ivf_partitions", "Index partitions that are IVF.",
          (double)is.ivf_partitions);
    gauge(b, "recalld_index_pending", "Re-index backlog: rows touched and not yet checked.",
          (double)is.pending);
    gauge(b, "recalld_index_staleness_seconds", "Age of the oldest pending touch, 0 when none.",
          is.staleness_ms / 1e3);
    counter(b, "recalld_index_added_total", "Rows added to the index.", is.added);
    counter(b, "recalld_index_reindexed_total", "Rows re-indexed after drifting.", is.reindexed);
    counter(b, "recalld_index_skipped_small_drift_total",
            "Touched rows left as indexed (drift under the threshold).", is.skipped_small_drift);
    counter(b, "recalld_index_retrains_total", "IVF partitions (re)trained.", is.retrains);
    counter(b, "recalld_index_fit_retrains_total",
            "IVF partitions retrained because their centroids no longer fit their rows.",
            is.retrains_fit);
    gauge(b, "recalld_index_fit_ratio",
          "Worst IVF partition: recent rows' distance to their nearest centroid over the "
          "training rows' (1 = as at training; 0 = not measured).",
          is.fit_worst);
    rc_prom_family(b, "recalld_index_new_item_freshness_seconds", "histogram",
                   "Time from a new item's first touch to searchable in the index.");
    rc_prom_hist_snap(b, "recalld_index_new_item_freshness_seconds", NULL, &is.fresh_hist);
    rc_prom_family(b, "recalld_index_write_lock_seconds", "histogram",
                   "How long the trainer held an index partition's write lock (a batch of "
                   "rows, a retrain's swap): what a search that finds the lock taken waits for, "
                   "besides its own wake-up.");
    rc_prom_hist_snap(b, "recalld_index_write_lock_seconds", NULL, &is.write_hold_hist);
    gauge(b, "recalld_index_overflow_rows",
          "Rows in the overflow partition (index.max_partitions reached).",
          (double)is.overflow_rows);
    gauge(b, "recalld_index_bytes", "Memory held by the index.", (double)is.bytes);
}

static void render_kafka(rc_buf *b, rc_consumer *k, const char *topic)
{
    rc_consumer_part parts[1024];
    rc_consumer_stats st;
    rc_buf lab;
    size_t n = rc_consumer_partitions(k, parts, RC_ARRAY_LEN(parts));
    rc_consumer_stats_get(k, &st);
    rc_prom_family(b, "recalld_kafka_consumer_lag", "gauge",
                   "Messages behind the high watermark, per assigned partition (refreshed "
                   "every second).");
    rc_buf_init(&lab, 0);
    for (size_t i = 0; i < RC_MIN(n, RC_ARRAY_LEN(parts)); i++) {
        char p[16];
        if (parts[i].lag < 0)
            continue;
        snprintf(p, sizeof p, "%d", parts[i].partition);
        rc_buf_reset(&lab);
        rc_prom_label(&lab, "topic", topic ? topic : "");
        rc_prom_label(&lab, "partition", p);
        rc_prom_sample(b, "recalld_kafka_consumer_lag", lab.data, (double)parts[i].lag);
    }
    rc_buf_free(&lab);
    gauge(b, "recalld_kafka_assigned_partitions", "Partitions assigned to this consumer.",
          st.assigned);
    counter(b, "recalld_kafka_messages_total", "Messages consumed.", st.messages);
    counter(b, "recalld_kafka_bytes_total", "Payload bytes consumed.", st.bytes);
    counter(b, "recalld_kafka_dead_letters_total", "Events sent to the dead-letter sink.",
            st.dead_letters);
    counter(b, "recalld_kafka_dead_letter_errors_total", "Dead letters that could not be written.",
            st.dead_letter_errors);
    counter(b, "recalld_kafka_dead_letters_dropped_total",
            "Dead letters deleted by a rotation of kafka.dlq_file (kafka.dlq_file_max_mb).",
            st.dead_letters_dropped);
    counter(b, "recalld_kafka_errors_total", "Consumer errors reported by librdkafka.", st.errors);
    counter(b, "recalld_kafka_paused_batches_total",
            "Batches refused because the trainer was busy (backpressure).", st.refused_batches);
    counter(b, "recalld_kafka_commits_total", "Offset commits acknowledged.", st.commits);
    counter(b, "recalld_kafka_commit_errors_total", "Offset commits that failed.",
            st.commit_errors);
    counter(b, "recalld_kafka_lost_total",
            "Offsets deleted from the log before this process read them (retention).", st.lost);
    counter(b, "recalld_kafka_offset_gaps_total",
            "Offsets skipped that held no readable message (compaction, transaction markers).",
            st.offset_gaps);
    counter(b, "recalld_kafka_skipped_applied_total",
            "Messages below the model's position, dropped (already applied).", st.skipped_applied);
    counter(b, "recalld_kafka_rebalances_total", "Assignments and revokes seen.", st.rebalances);
}

static void render_server(rc_buf *b, rc_server *s)
{
    rc_server_stats st;
    rc_server_stats_get(s, &st);
    gauge(b, "recalld_socket_clients", "Unix socket clients connected now.", (double)st.clients);
    counter(b, "recalld_socket_accepted_total", "Unix socket connections accepted.", st.accepted);
    rc_prom_family(b, "recalld_socket_refused_total", "counter",
                   "Unix socket connections refused, by reason.");
    rc_prom_sample_u64(b, "recalld_socket_refused_total", "reason=\"max_clients\"", st.refused_max);
    rc_prom_sample_u64(b, "recalld_socket_refused_total", "reason=\"uid\"", st.refused_uid);
    counter(b, "recalld_socket_requests_total", "Request lines dispatched.", st.requests);
    counter(b, "recalld_socket_lines_too_long_total", "Request lines over socket.max_line.",
            st.too_long);
    counter(b, "recalld_socket_idle_closed_total", "Clients closed after socket.idle_timeout_ms.",
            st.idle_closed);
    counter(b, "recalld_socket_slow_dropped_total",
            "Clients dropped for not reading their replies (socket.max_outbuf).", st.slow_dropped);
    gauge(b, "recalld_socket_inflight", "Requests running on worker threads now.",
          (double)st.inflight);
    counter(b, "recalld_socket_request_timeouts_total",
            "Clients closed because a request line was not complete within "
            "socket.request_timeout_ms.",
            st.request_timeouts);
    counter(b, "recalld_socket_evicted_idle_total",
            "Idle or unfinished clients closed at socket.max_clients to admit a new one.",
            st.evicted_idle);
    counter(b, "recalld_socket_probes_total",
            "Connections admitted to the probe slots beyond socket.max_clients.", st.probes);
    counter(b, "recalld_socket_fast_requests_total",
            "Requests answered on the loop thread (health), never queued behind workers.",
            st.fast_requests);
    counter(b, "recalld_socket_outbuf_total_dropped_total",
            "Clients dropped because unsent replies of all clients reached "
            "socket.max_outbuf_total.",
            st.outbuf_total_dropped);
    gauge(b, "recalld_socket_queued_bytes", "Unsent reply bytes of all clients now.",
          (double)st.queued_bytes);
    gauge(b, "recalld_socket_max_queued_bytes", "socket.max_outbuf_total.",
          (double)st.max_outbuf_total);
}

static void render_api(rc_buf *b, rc_api *a)
{
    const char *why;
    char lab[32];
    gauge(b, "recalld_ready", "1 when health is ok: model loaded, partitions assigned.",
          rc_api_ready(a, &why));
    counter(b, "recalld_request_errors_total", "Requests answered ok:false.",
            atomic_load(&a->errors));
    rc_prom_family(b, "recalld_request_duration_seconds", "histogram",
                   "Time to handle one socket request (parse, search, reply), by op.");
    for (int op = 0; op < RC_API_OP_COUNT; op++) {
        snprintf(lab, sizeof lab, "op=\"%s\"", rc_api_op_name(op));
        rc_prom_hist(b, "recalld_request_duration_seconds", lab, &a->latency[op]);
    }
    counter(b, "recalld_two_tower_requests_total", "Recall requests with \"mode\":\"two_tower\".",
            atomic_load(&a->tower_requests));
    counter(b, "recalld_two_tower_request_errors_total",
            "Two-tower recall requests answered ok:false.", atomic_load(&a->tower_errors));
    rc_prom_family(b, "recalld_two_tower_request_duration_seconds", "histogram",
                   "Time to handle one two_tower recall request (user tower, search, reply).");
    rc_prom_hist(b, "recalld_two_tower_request_duration_seconds", NULL, &a->tower_latency);
}

static void render_tower(rc_buf *b, rc_engine *e)
{
    rc_engine_tower_info ti;
    rc_engine_tower_info_get(e, &ti);
    gauge(b, "recalld_tower_loaded", "1 when a two-tower model is served.", ti.loaded);
    gauge(b, "recalld_tower_loading", "1 while a two-tower model load is in progress.", ti.loading);
    gauge(b, "recalld_tower_params", "Parameters of the served two-tower model.",
          (double)ti.params);
    gauge(b, "recalld_tower_dim", "Vector size of the served two-tower model.", ti.dim);
    gauge(b, "recalld_tower_items", "Items with an item-tower vector.", ti.items);
    counter(b, "recalld_tower_reloads_total", "Two-tower model loads that succeeded.", ti.loads);
    counter(b, "recalld_tower_reload_failures_total",
            "Two-tower model loads refused (the served model stayed).", ti.load_failures);
    counter(b, "recalld_tower_recomputed_total",
            "Item-tower vectors recomputed after their word2vec vector drifted.", ti.recomputed);
    gauge(b, "recalld_tower_refresh_pending", "Rows queued for a word2vec drift check.",
          (double)ti.refresh_pending);
    gauge(b, "recalld_tower_index_size", "Rows searchable in the tower index.",
          (double)ti.index.size);
    gauge(b, "recalld_tower_index_pending", "Tower index backlog: rows touched, not yet checked.",
          (double)ti.index.pending);
    gauge(b, "recalld_tower_index_staleness_seconds",
          "Age of the oldest pending tower index touch, 0 when none.", ti.index.staleness_ms / 1e3);
    rc_prom_family(b, "recalld_tower_index_new_item_freshness_seconds", "histogram",
                   "Time from a new item's first touch to searchable in the tower index.");
    rc_prom_hist_snap(b, "recalld_tower_index_new_item_freshness_seconds", NULL,
                      &ti.index.fresh_hist);
    gauge(b, "recalld_tower_bytes", "Memory held by the served two-tower bundle.",
          (double)ti.bytes);
    rc_engine_retrain_info ri;
    rc_engine_retrain_info_get(e, &ri);
    rc_prom_family(b, "recalld_tower_retrains_total", "counter",
                   "Background retrains of the two-tower model, by outcome.");
    rc_prom_sample_u64(b, "recalld_tower_retrains_total", "result=\"done\"", ri.done);
    rc_prom_sample_u64(b, "recalld_tower_retrains_total", "result=\"failed\"", ri.failed);
    rc_prom_sample_u64(b, "recalld_tower_retrains_total", "result=\"skipped\"", ri.skipped);
    gauge(b, "recalld_tower_retrain_running", "1 while a background retrain runs.", ri.running);
    gauge(b, "recalld_tower_retrain_last_duration_seconds",
          "Duration of the last retrain, snapshot to serving (0: none yet).", ri.last_seconds);
    gauge(b, "recalld_tower_retrain_last_examples",
          "Training examples in the replay buffer at the last retrain.", (double)ri.last_examples);
    gauge(b, "recalld_tower_retrain_last_loss",
          "Mean training loss over the last 10% of the last retrain's examples.", ri.last_loss);
    gauge(b, "recalld_tower_replay_clicks", "Clicks held in the replay buffer.",
          (double)ri.replay.fill);
    gauge(b, "recalld_tower_replay_capacity_clicks", "Bound of the replay buffer (0: off).",
          (double)ri.replay.capacity);
    gauge(b, "recalld_tower_replay_bytes", "Memory of the replay buffer.", (double)ri.replay.bytes);
}

static void render_checkpoint(rc_buf *b, const rc_metrics_sources *s)
{
    rc_metrics_checkpoint ck = {.last_ok_wall_ms = -1, .last_duration_s = -1, .last_pause_s = -1};
    if (s->checkpoint(s->checkpoint_arg, &ck) != 0)
        return;
    rc_prom_family(b, "recalld_checkpoint_age_seconds", "gauge",
                   "Time since the newest durable checkpoint was completed (absent: none).");
    if (ck.last_ok_wall_ms >= 0)
        rc_prom_sample(b, "recalld_checkpoint_age_seconds", NULL,
                       (double)RC_MAX(0, rc_wall_ms() - ck.last_ok_wall_ms) / 1e3);
    rc_prom_family(b, "recalld_checkpoint_duration_seconds", "gauge",
                   "Duration of the last checkpoint write (absent: none yet).");
    if (ck.last_duration_s >= 0)
        rc_prom_sample(b, "recalld_checkpoint_duration_seconds", NULL, ck.last_duration_s);
    rc_prom_family(b, "recalld_checkpoint_pause_seconds", "gauge",
                   "Model writer's pause to copy the last checkpoint (absent: none yet).");
    if (ck.last_pause_s >= 0)
        rc_prom_sample(b, "recalld_checkpoint_pause_seconds", NULL, ck.last_pause_s);
    rc_prom_family(b, "recalld_checkpoints_total", "counter", "Checkpoint writes, by result.");
    rc_prom_sample_u64(b, "recalld_checkpoints_total", "result=\"ok\"", ck.written);
    rc_prom_sample_u64(b, "recalld_checkpoints_total", "result=\"failed\"", ck.failed);
    gauge(b, "recalld_checkpoint_bytes", "Size of the newest durable checkpoint.",
          (double)ck.last_bytes);
}

static void render_self(rc_buf *b, rc_metrics *m)
{
    rc_metrics_stats st;
    rc_metrics_stats_get(m, &st);
    counter(b, "recalld_metrics_scrapes_total", "Answers to GET /metrics.", st.scrapes);
    counter(b, "recalld_metrics_bad_requests_total", "HTTP requests answered 4xx.",
            st.bad_requests);
    counter(b, "recalld_metrics_timeouts_total", "HTTP connections closed by the timeout.",
            st.timeouts);
    counter(b, "recalld_metrics_refused_total", "HTTP connections over the client limit.",
            st.refused);
}

/* The numbers of the stats op that no source family above shows. */
static void render_stats(rc_buf *b, const rc_metrics_sources *s)
{
    rc_buf st;
    rc_buf_init(&st, 0);
    rc_buf_puts(&st, "{");
    if (s->api)
        rc_api_stats_json(s->api, &st);
    else
        rc_engine_stats_json(s->engine, &st);
    rc_buf_puts(&st, "}");
    if (!st.overflow)
        rc__metrics_render_stats(b, st.data, st.len);
    rc_buf_free(&st);
}

void rc_metrics_render(const rc_metrics_sources *s, rc_buf *out)
{
    rc_prom_family(out, "recalld_build_info", "gauge", "Always 1; the version is a label.");
    rc_prom_sample(out, "recalld_build_info", "version=\"" RC_VERSION "\"", 1);
    gauge(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
          (double)rc_rss_bytes());
    if (s->api)
        render_api(out, s->api);
    if (s->engine) {
        render_events(out, s->engine);
        render_index(out, s->engine);
        render_tower(out, s->engine);
    }
    if (s->consumer)
        render_kafka(out, s->consumer, s->topic);
    if (s->server)
        render_server(out, s->server);
    if (s->checkpoint)
        render_checkpoint(out, s);
    if (s->metrics)
        render_self(out, s->metrics);
    if (s->api || s->engine)
        render_stats(out, s);
    if (s->extra)
        s->extra(s->extra_arg, out);
}
