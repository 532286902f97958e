/* metrics_stats — the table from the numbers of the `stats` op to the
 * families of /metrics (metrics.h, rc_metrics_stat).
 *
 * Every number (and boolean) of the stats object has one row: either the
 * family is rendered here from the stats text itself (COUNTER, GAUGE), or the
 * page already renders that figure from its source under the family named
 * (SAME: same figure; HIST: quantiles and sample counts of a recent window,
 * covered by a histogram), or it is not a quantity (INFO). A stats number
 * without a row fails tests/test_metrics.c (metrics_every_stats_number_exported),
 * so the page cannot fall behind the stats op. The checkpoint rows apply
 * while checkpoints are enabled (checkpoint.enabled), as the daemon's
 * checkpoint families (rc_metrics_sources.checkpoint) do. */
#include "recalld/metrics.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "metrics_int.h"

#define MS_S 1e-3 /* milliseconds -> seconds */

#define C(p, m, h)                                                                                 \
    {                                                                                              \
        p, m, RC_MSTAT_COUNTER, 1, NULL, h                                                         \
    }
#define CL(p, m, l, h)                                                                             \
    {                                                                                              \
        p, m, RC_MSTAT_COUNTER, 1, l, h                                                            \
    }
#define G(p, m, sc, h)                                                                             \
    {                                                                                              \
        p, m, RC_MSTAT_GAUGE, sc, NULL, h                                                          \
    }
#define GL(p, m, l, sc, h)                                                                         \
    {                                                                                              \
        p, m, RC_MSTAT_GAUGE, sc, l, h                                                             \
    }
#define S(p, m)                                                                                    \
    {                                                                                              \
        p, m, RC_MSTAT_SAME, 1, NULL, NULL                                                         \
    }
#define H(p, m)                                                                                    \
    {                                                                                              \
        p, m, RC_MSTAT_HIST, 1, NULL, NULL                                                         \
    }
#define I(p, why)                                                                                  \
    {                                                                                              \
        p, NULL, RC_MSTAT_INFO, 1, NULL, why                                                       \
    }

static const rc_metrics_stat table[] = {
    /* events */
    S("events.consumed", "recalld_events_consumed_total"),
    S("events.applied", "recalld_events_applied_total"),
    S("events.invalid", "recalld_events_invalid_total"),
    S("events.invalid_by_reason.*", "recalld_events_invalid_total"),
    S("events.ignored", "recalld_events_ignored_total"),
    C("events.duplicates", "recalld_events_duplicates_total",
      "Duplicate clicks (same user, item and time): applied, not trained."),
    C("events.reordered", "recalld_events_reordered_total",
      "Out-of-order clicks inserted at their place in the session and trained."),
    C("events.late", "recalld_events_late_total",
      "Clicks too late for their session: applied, not trained."),
    S("events.rejected_capacity", "recalld_events_rejected_capacity_total"),
    S("events.lost", "recalld_events_lost_total"),
    G("events.max_ts", "recalld_events_max_timestamp_seconds", MS_S,
      "Newest event time applied, epoch seconds."),
    S("items", "recalld_items"),
    G("cities", "recalld_cities", 1, "Cities known to the item table."),
    G("categories", "recalld_categories", 1, "Categories known to the item table."),
    /* users (sessions) */
    G("users.active", "recalld_users", 1, "Users held in the session store."),
    C("users.evicted_lru", "recalld_users_evicted_lru_total",
      "Users evicted because sessions.max_users was reached (least recently active)."),
    C("users.expired_ttl", "recalld_users_expired_ttl_total",
      "Users dropped after sessions.ttl_ms of event time without a click."),
    C("users.sessions", "recalld_sessions_total", "Sessions started."),
    C("users.spill_failures", "recalld_users_spill_failures_total",
      "Clicks past a user record's inline room with no memory for more (oldest click dropped)."),
    /* index */
    S("index.size", "recalld_index_size"),
    S("index.partitions", "recalld_index_partitions"),
    S("index.ivf_partitions", "recalld_index_ivf_partitions"),
    S("index.pending", "recalld_index_pending"),
    S("index.staleness_ms", "recalld_index_staleness_seconds"),
    S("index.added", "recalld_index_added_total"),
    S("index.reindexed", "recalld_index_reindexed_total"),
    S("index.skipped_small_drift", "recalld_index_skipped_small_drift_total"),
    S("index.retrains", "recalld_index_retrains_total"),
    S("index.retrains_fit", "recalld_index_fit_retrains_total"),
    S("index.fit", "recalld_index_fit_ratio"),
    S("index.overflow_rows", "recalld_index_overflow_rows"),
    C("index.partition_errors", "recalld_index_partition_errors_total",
      "Rows that could not get a partition (out of memory); they wait at the queue's tail."),
    /* training */
    S("training.pairs", "recalld_training_pairs_total"),
    G("training.loss", "recalld_training_loss", 1, "Moving average of the training loss."),
    G("training.replay.capacity", "recalld_training_replay_capacity", 1,
      "Training examples the streaming trainer's replay buffer holds at most."),
    G("training.replay.fill", "recalld_training_replay_fill", 1,
      "Training examples held for replay."),
    C("training.replay.replayed", "recalld_training_replayed_total",
      "Training examples trained again in idle trainer time."),
    C("training.installs", "recalld_training_installs_total",
      "Rebuilt tables installed by install_model."),
    C("training.installed_rows", "recalld_training_installed_rows_total",
      "Rows written by install_model (replaced and created)."),
    C("training.replay.skipped", "recalld_training_replay_skipped_total",
      "Replays given up: owed beyond the replay window while events waited."),
    C("training.replay.yields", "recalld_training_replay_yields_total",
      "Times replay stopped or did not start because events waited for the trainer."),
    C("training.replay.forgotten", "recalld_training_replay_forgotten_total",
      "Examples dropped from replay unreplayed when install_model installed a rebuild."),
    C("training.replay.owed_by_time", "recalld_training_replay_owed_by_time_total",
      "Replays owed for the event time between clicks (train.replay_per_hour), besides the "
      "ratio per click."),
    G("training.replay.pending", "recalld_training_replay_pending", 1,
      "Replays owed, done when the trainer is idle."),
    G("training.replay.bytes", "recalld_training_replay_bytes", 1,
      "Heap bytes of the replay buffer."),
    I("training.replay.adaptive", "a setting (train.replay_adaptive), not a quantity"),
    G("training.replay.ratio", "recalld_training_replay_ratio", 1,
      "Replays owed per new click: train.replay_ratio, or the adaptive controller's centre."),
    I("training.replay.phase_ratio", "the adaptive controller's running phase, ratio x or / 1.25"),
    C("training.replay.probes", "recalld_training_replay_probes_total",
      "New clicks held untrained to the end of their phase and scored twice (adaptive replay)."),
    C("training.replay.decisions", "recalld_training_replay_decisions_total",
      "Cycles of the adaptive replay controller closed."),
    C("training.replay.raises", "recalld_training_replay_raises_total",
      "Cycles that raised the adaptive replay ratio."),
    C("training.replay.lowers", "recalld_training_replay_lowers_total",
      "Cycles that lowered the adaptive replay ratio."),
    C("training.sampler_rebuilds", "recalld_sampler_rebuilds_total",
      "Rebuilds of the negative sampler's table."),
    C("training.hard_negatives", "recalld_training_hard_negatives_total",
      "Negatives drawn from the same category (hard negatives)."),
    {"training.cpu_ms", "recalld_trainer_cpu_seconds_total", RC_MSTAT_COUNTER, MS_S, NULL,
     "CPU time of the trainer thread in its batches (its own share of the skip-gram updates "
     "included)."},
    G("training.threads", "recalld_trainer_threads", 1,
      "Threads that train a batch's skip-gram updates (model.trainer_threads)."),
    {"training.cooc_cpu_ms", "recalld_trainer_cooc_cpu_seconds_total", RC_MSTAT_COUNTER, MS_S, NULL,
     "CPU time of the co-occurrence notes taken off the trainer thread (model.trainer_threads > "
     "1)."},
    C("training.fanouts", "recalld_trainer_fanouts_total",
      "Batches whose skip-gram updates ran on several threads."),
    C("training.inline_batches", "recalld_trainer_inline_batches_total",
      "Batches recorded for several threads but trained by the trainer alone (few examples)."),
    H("freshness_ms.p50", "recalld_freshness_seconds"),
    H("freshness_ms.p99", "recalld_freshness_seconds"),
    H("freshness_ms.samples", "recalld_freshness_seconds"),
    H("freshness_ms.new_item_p50", "recalld_index_new_item_freshness_seconds"),
    H("freshness_ms.new_item_p99", "recalld_index_new_item_freshness_seconds"),
    H("index.write_lock_p50_ms", "recalld_index_write_lock_seconds"),
    H("index.write_lock_p99_ms", "recalld_index_write_lock_seconds"),
    H("index.write_lock_max_ms", "recalld_index_write_lock_seconds"),
    /* memory */
    S("memory.rss_bytes", "process_resident_memory_bytes"),
    G("memory.table_bytes", "recalld_table_bytes", 1, "Memory held by the item table."),
    G("memory.session_bytes", "recalld_session_bytes", 1, "Memory held by the session store."),
    G("memory.sampler_bytes", "recalld_sampler_bytes", 1,
      "Memory held by the negative sampler (per-row records, city members, alias tables)."),
    G("memory.anchor_bytes", "recalld_anchor_bytes", 1,
      "Memory held by the warm-start anchor (train.anchor; 0 when off)."),
    S("memory.index_bytes", "recalld_index_bytes"),
    G("memory.snapshot_bytes", "recalld_checkpoint_snapshot_bytes", 1,
      "Memory held by the checkpoint's copy of the table (released after each write)."),
    G("memory.heap_bytes", "recalld_heap_bytes", 1,
      "Bytes malloc took from the system (all arenas and mapped blocks)."),
    G("memory.heap_free_bytes", "recalld_heap_free_bytes", 1,
      "Free bytes inside malloc's arenas (allocator slack)."),
    C("memory.trims", "recalld_malloc_trims_total",
      "Times the trainer gave malloc's free pages back (pipeline.trim_interval_ms)."),
    G("memory.trim_last_us", "recalld_malloc_trim_last_seconds", 1e-6,
      "Duration of the trainer's last malloc_trim."),
    /* checkpoints: the hook's families (present when checkpoints are enabled) */
    G("checkpoint.enabled", "recalld_checkpoint_enabled", 1, "1 when checkpoints are written."),
    S("checkpoint.written", "recalld_checkpoints_total"),
    S("checkpoint.failures", "recalld_checkpoints_total"),
    C("checkpoint.unchanged", "recalld_checkpoint_unchanged_total",
      "Checkpoint requests with nothing new to write (the last one stays durable)."),
    C("checkpoint.reserved", "recalld_checkpoint_reserved_total",
      "Checkpoint requests that reserved the table's copy before the trainer's pause."),
    G("checkpoint.in_progress", "recalld_checkpoint_in_progress", 1,
      "1 while a checkpoint is being taken or written."),
    G("checkpoint.seq", "recalld_checkpoint_seq", 1, "Sequence number of the newest checkpoint."),
    S("checkpoint.age_ms", "recalld_checkpoint_age_seconds"),
    S("checkpoint.bytes", "recalld_checkpoint_bytes"),
    S("checkpoint.duration_ms", "recalld_checkpoint_duration_seconds"),
    G("checkpoint.mb_s", "recalld_checkpoint_write_bytes_per_second", 1e6,
      "Write rate of the last checkpoint."),
    S("checkpoint.pause_ms", "recalld_checkpoint_pause_seconds"),
    H("checkpoint.pause_p99_ms", "recalld_checkpoint_pause_max_seconds"),
    G("checkpoint.pause_max_ms", "recalld_checkpoint_pause_max_seconds", MS_S,
      "Longest pause of the model writer to copy a checkpoint since start."),
    G("checkpoint.restored_seq", "recalld_checkpoint_restored_seq", 1,
      "Sequence number of the checkpoint restored at start (0: none)."),
    G("checkpoint.restore_ms", "recalld_checkpoint_restore_seconds", MS_S,
      "Time to restore the checkpoint at start until ready to serve."),
    G("checkpoint.state_bytes", "recalld_checkpoint_state_bytes", 1,
      "Bytes of the sessions and co-occurrence counts the last checkpoint took."),
    G("checkpoint.state_ms", "recalld_checkpoint_state_seconds", MS_S,
      "Time the last take spent on the sessions and co-occurrence counts (in the trainer's "
      "pause)."),
    G("checkpoint.restored_users", "recalld_checkpoint_restored_users", 1,
      "Users whose sessions the checkpoint restored at start held."),
    G("checkpoint.restored_profiles", "recalld_checkpoint_restored_profiles", 1,
      "Users whose profile (device, tags, counters) the checkpoint restored at start held."),
    G("checkpoint.restored_cooc_items", "recalld_checkpoint_restored_cooc_items", 1,
      "Items with co-occurrence counts after the restore at start."),
    G("checkpoint.restored_tower_clicks", "recalld_checkpoint_restored_tower_clicks", 1,
      "Clicks of the tower retrainer's replay buffer the restore at start held."),
    G("checkpoint.restored_dropped", "recalld_checkpoint_restored_dropped", 1,
      "Restored clicks and co-occurrence entries dropped: their item is not in the table."),
    G("checkpoint.restored_state_ok", "recalld_checkpoint_restored_state_ok", 1,
      "0 when the sessions and co-occurrence counts of the checkpoint restored at start were "
      "malformed or did not fit in memory (part of them restored), else 1."),
    /* two-tower model */
    S("tower.loaded", "recalld_tower_loaded"),
    S("tower.loading", "recalld_tower_loading"),
    S("tower.params", "recalld_tower_params"),
    S("tower.dim", "recalld_tower_dim"),
    G("tower.max_clicks", "recalld_tower_max_clicks", 1,
      "Clicks of history the served user tower reads."),
    S("tower.items", "recalld_tower_items"),
    G("tower.load_done", "recalld_tower_load_done_items", 1,
      "Items vectorised by the load in progress."),
    G("tower.load_total", "recalld_tower_load_total_items", 1,
      "Items to vectorise by the load in progress."),
    G("tower.load_ms", "recalld_tower_load_seconds", MS_S, "Duration of the last model load."),
    S("tower.loads", "recalld_tower_reloads_total"),
    S("tower.load_failures", "recalld_tower_reload_failures_total"),
    C("tower.checked", "recalld_tower_checked_total",
      "Item-tower vectors checked for word2vec drift."),
    S("tower.recomputed", "recalld_tower_recomputed_total"),
    S("tower.refresh_pending", "recalld_tower_refresh_pending"),
    S("tower.bytes", "recalld_tower_bytes"),
    S("tower.index.size", "recalld_tower_index_size"),
    G("tower.index.partitions", "recalld_tower_index_partitions", 1,
      "Tower index partitions (city, category)."),
    G("tower.index.ivf_partitions", "recalld_tower_index_ivf_partitions", 1,
      "Tower index partitions that are IVF."),
    S("tower.index.pending", "recalld_tower_index_pending"),
    S("tower.index.staleness_ms", "recalld_tower_index_staleness_seconds"),
    C("tower.index.added", "recalld_tower_index_added_total", "Rows added to the tower index."),
    C("tower.index.reindexed", "recalld_tower_index_reindexed_total",
      "Rows re-indexed in the tower index after drifting."),
    C("tower.index.skipped_small_drift", "recalld_tower_index_skipped_small_drift_total",
      "Touched tower rows left as indexed (drift under the threshold)."),
    C("tower.index.retrains", "recalld_tower_index_retrains_total",
      "Tower IVF partitions (re)trained."),
    C("tower.index.retrains_fit", "recalld_tower_index_fit_retrains_total",
      "Tower IVF partitions retrained because their centroids no longer fit their rows."),
    G("tower.index.fit", "recalld_tower_index_fit_ratio", 1,
      "Worst tower IVF partition: recent rows' distance to their nearest centroid over the "
      "training rows' (1 = as at training; 0 = not measured)."),
    H("tower.index.new_item_p50_ms", "recalld_tower_index_new_item_freshness_seconds"),
    H("tower.index.new_item_p99_ms", "recalld_tower_index_new_item_freshness_seconds"),
    G("tower.index.bytes", "recalld_tower_index_bytes", 1, "Memory held by the tower index."),
    G("tower.retrain.enabled", "recalld_tower_retrain_enabled", 1,
      "1 when background retraining is on."),
    S("tower.retrain.running", "recalld_tower_retrain_running"),
    G("tower.retrain.interval_s", "recalld_tower_retrain_interval_seconds", 1,
      "Time between background retrains."),
    S("tower.retrain.done", "recalld_tower_retrains_total"),
    S("tower.retrain.failed", "recalld_tower_retrains_total"),
    S("tower.retrain.skipped", "recalld_tower_retrains_total"),
    S("tower.retrain.last_seconds", "recalld_tower_retrain_last_duration_seconds"),
    G("tower.retrain.last_train_seconds", "recalld_tower_retrain_last_train_seconds", 1,
      "Training part of the last retrain."),
    G("tower.retrain.last_clicks", "recalld_tower_retrain_last_clicks", 1,
      "Clicks the last retrain read."),
    G("tower.retrain.last_users", "recalld_tower_retrain_last_users", 1,
      "Users the last retrain read."),
    G("tower.retrain.last_sessions", "recalld_tower_retrain_last_sessions", 1,
      "Sessions the last retrain read."),
    S("tower.retrain.last_examples", "recalld_tower_retrain_last_examples"),
    G("tower.retrain.last_trained", "recalld_tower_retrain_last_trained", 1,
      "Examples trained by the last retrain."),
    S("tower.retrain.last_loss", "recalld_tower_retrain_last_loss"),
    G("tower.retrain.last_first_loss", "recalld_tower_retrain_last_first_loss", 1,
      "Mean loss over the first 10% of the last retrain's examples."),
    G("tower.retrain.last_end_ms", "recalld_tower_retrain_last_end_timestamp_seconds", MS_S,
      "When the last retrain ended, epoch seconds."),
    S("tower.retrain.replay.capacity", "recalld_tower_replay_capacity_clicks"),
    S("tower.retrain.replay.fill", "recalld_tower_replay_clicks"),
    C("tower.retrain.replay.added", "recalld_tower_replay_added_total",
      "Clicks added to the replay buffer."),
    C("tower.retrain.replay.tag_lists", "recalld_tower_replay_tag_lists_total",
      "Tag lists added to the replay buffer."),
    C("tower.retrain.replay.tags_lost", "recalld_tower_replay_tags_lost_total",
      "Tag references found overwritten when a retrain read them."),
    S("tower.retrain.replay.bytes", "recalld_tower_replay_bytes"),
    /* session co-occurrence channel */
    G("cooc.enabled", "recalld_cooc_enabled", 1, "1 when the co-occurrence channel is on."),
    G("cooc.items", "recalld_cooc_items", 1, "Items with a co-occurrence list."),
    G("cooc.entries", "recalld_cooc_entries", 1, "Co-occurrence entries held."),
    G("cooc.bytes", "recalld_cooc_bytes", 1, "Memory held by the co-occurrence channel."),
    G("cooc.max_bytes", "recalld_cooc_max_bytes", 1, "Bound of the co-occurrence channel."),
    C("cooc.clicks", "recalld_cooc_clicks_total", "Clicks counted by the co-occurrence channel."),
    C("cooc.pairs", "recalld_cooc_pairs_total", "Co-occurrence increments (both directions)."),
    C("cooc.evictions", "recalld_cooc_evictions_total",
      "Co-occurrence entries replaced in a full list."),
    C("cooc.dropped", "recalld_cooc_dropped_total",
      "Co-occurrence pairs or lists that found no room."),
    G("cooc.retired", "recalld_cooc_retired_lists", 1,
      "Replaced co-occurrence lists waiting for readers to leave."),
    /* user profiles */
    G("profiles.users", "recalld_profiles", 1, "Users with a profile."),
    G("profiles.with_device", "recalld_profiles_with_device", 1, "Profiles with a device."),
    G("profiles.with_tags", "recalld_profiles_with_tags", 1, "Profiles with tags."),
    C("profiles.evicted_lru", "recalld_profiles_evicted_lru_total",
      "Profiles evicted at the user bound (least recently active)."),
    C("profiles.expired_ttl", "recalld_profiles_expired_ttl_total",
      "Profiles dropped after the session TTL of event time."),
    G("profiles.bytes", "recalld_profiles_bytes", 1, "Memory held by the profiles."),
    /* the API */
    C("server.requests", "recalld_requests_total", "Request lines handled, any op."),
    S("server.errors", "recalld_request_errors_total"),
    S("server.clients", "recalld_socket_clients"),
    S("server.accepted", "recalld_socket_accepted_total"),
    S("server.refused_max_clients", "recalld_socket_refused_total"),
    S("server.refused_uid", "recalld_socket_refused_total"),
    S("server.lines_too_long", "recalld_socket_lines_too_long_total"),
    S("server.idle_closed", "recalld_socket_idle_closed_total"),
    S("server.request_timeouts", "recalld_socket_request_timeouts_total"),
    S("server.evicted_idle", "recalld_socket_evicted_idle_total"),
    S("server.probes", "recalld_socket_probes_total"),
    S("server.fast_requests", "recalld_socket_fast_requests_total"),
    S("server.slow_dropped", "recalld_socket_slow_dropped_total"),
    S("server.outbuf_total_dropped", "recalld_socket_outbuf_total_dropped_total"),
    S("server.queued_bytes", "recalld_socket_queued_bytes"),
    S("server.max_outbuf_total", "recalld_socket_max_queued_bytes"),
    S("server.inflight", "recalld_socket_inflight"),
    G("server.slice_us", "recalld_socket_request_slice_seconds", 1e-6,
      "socket.request_slice_us: the scheduler slice the request path asks for (0 = the kernel's)."),
    G("server.loop_slice_us", "recalld_socket_loop_slice_seconds", 1e-6,
      "The loop thread's scheduler slice as the kernel reports it (0 = not reported)."),
    G("server.worker_slice_us", "recalld_socket_worker_slice_seconds", 1e-6,
      "The request workers' scheduler slice as the kernel reports it (0 = not reported or no "
      "request yet)."),
    S("two_tower.requests", "recalld_two_tower_requests_total"),
    S("two_tower.errors", "recalld_two_tower_request_errors_total"),
    H("two_tower.p50_ms", "recalld_two_tower_request_duration_seconds"),
    H("two_tower.p99_ms", "recalld_two_tower_request_duration_seconds"),
    H("two_tower.samples", "recalld_two_tower_request_duration_seconds"),
    /* recall latency by stage (api.h, rc_api_stage) */
    CL("recall_stages.count.*", "recalld_recall_stage_observations_total", "stage",
       "Recall requests observed by each latency stage."),
    {"recall_stages.sum_us.*", "recalld_recall_stage_seconds_total", RC_MSTAT_COUNTER, 1e-6,
     "stage",
     "Time spent in each stage of recall requests (queue_wait, parse, query, index_lock, coarse, "
     "scan, rerank, fallback, reply; total)."},
    GL("recall_stages.p50_us.*", "recalld_recall_stage_p50_seconds", "stage", 1e-6,
       "Median time of a recall stage since start (interpolated in its histogram bucket)."),
    GL("recall_stages.p99_us.*", "recalld_recall_stage_p99_seconds", "stage", 1e-6,
       "99th percentile of a recall stage since start (interpolated in its histogram bucket)."),
    C("recall_stages.work.parts", "recalld_recall_partitions_searched_total",
      "Index partitions searched by recall requests (summed over requests)."),
    C("recall_stages.work.lists", "recalld_recall_lists_scanned_total",
      "IVF lists scanned by recall requests (summed over requests)."),
    C("recall_stages.work.rows", "recalld_recall_rows_scored_total",
      "Index rows scored by recall requests, IVF lists and flat partitions (summed)."),
    /* Kafka (the daemon's consumer) */
    S("kafka.messages", "recalld_kafka_messages_total"),
    S("kafka.bytes", "recalld_kafka_bytes_total"),
    S("kafka.assigned", "recalld_kafka_assigned_partitions"),
    S("kafka.lag", "recalld_kafka_consumer_lag"),
    S("kafka.dead_letters", "recalld_kafka_dead_letters_total"),
    S("kafka.dead_letter_errors", "recalld_kafka_dead_letter_errors_total"),
    S("kafka.dead_letters_dropped", "recalld_kafka_dead_letters_dropped_total"),
    C("kafka.dlq_rotations", "recalld_kafka_dlq_rotations_total",
      "Rotations of kafka.dlq_file at kafka.dlq_file_max_mb."),
    S("kafka.errors", "recalld_kafka_errors_total"),
    S("kafka.paused_batches", "recalld_kafka_paused_batches_total"),
    S("kafka.commits", "recalld_kafka_commits_total"),
    S("kafka.commit_errors", "recalld_kafka_commit_errors_total"),
    S("kafka.rebalances", "recalld_kafka_rebalances_total"),
    G("kafka.revoke_pending", "recalld_kafka_revoke_pending", 1,
      "1 while a revoke waits for the checkpoint that covers it."),
    S("kafka.skipped_applied", "recalld_kafka_skipped_applied_total"),
    S("kafka.lost", "recalld_kafka_lost_total"),
    S("kafka.offset_gaps", "recalld_kafka_offset_gaps_total"),
    C("kafka.lookups_failed", "recalld_kafka_offset_lookups_failed_total",
      "Committed-offset look-ups that failed (losses at a partition start may go unseen)."),
    C("kafka.stale_offsets", "recalld_kafka_stale_offsets_total",
      "Stored offsets dropped because the partition was no longer ours."),
    C("kafka.lost_assignments", "recalld_kafka_lost_assignments_total",
      "Assignments lost without a revoke (session timeout, fenced)."),
    G("kafka.fatal", "recalld_kafka_fatal", 1, "1 after a fatal consumer error."),
    I("kafka.last_gap.partition", "where the last offset gap was, not a quantity"),
    I("kafka.last_gap.from", "where the last offset gap was, not a quantity"),
    I("kafka.last_gap.to", "where the last offset gap was, not a quantity"),
    /* roles (docs/DESIGN.md "Roles and replicas"): a trainer's vector publisher */
    C("kafka.vectors.marked", "recalld_vectors_marked_total",
      "Rows whose vector changed, handed to the vector publisher."),
    C("kafka.vectors.coalesced", "recalld_vectors_coalesced_total",
      "Changes of a row already waiting: one record carries the newest vector."),
    C("kafka.vectors.produced", "recalld_vectors_produced_total",
      "Vector records handed to the producer."),
    C("kafka.vectors.published", "recalld_vectors_published_total",
      "Vector records acknowledged by the broker."),
    C("kafka.vectors.failed", "recalld_vectors_failed_total",
      "Vector records not delivered (the row is published again)."),
    C("kafka.vectors.queue_full", "recalld_vectors_queue_full_total",
      "Produce calls refused by a full producer queue (the row waits)."),
    C("kafka.vectors.dropped", "recalld_vectors_dropped_total",
      "Changed rows not published at stop (or for want of memory)."),
    G("kafka.vectors.pending", "recalld_vectors_pending", 1, "Rows marked, not yet produced."),
    G("kafka.vectors.inflight", "recalld_vectors_inflight", 1,
      "Vector records produced, not yet acknowledged."),
    I("kafka.vectors.last_version", "a version number, not a quantity"),
    G("kafka.vectors.last_publish_ms", "recalld_vectors_last_publish_timestamp_seconds", MS_S,
      "Wall time of the newest vector record built, epoch seconds (-0.001: none)."),
    G("kafka.vectors.max_rate", "recalld_vectors_max_rate", 1,
      "vectors.max_rate: vector records per second at most."),
    /* a trainer shard's bootstrap of newly assigned cities (vboot.h) */
    C("kafka.vectors.bootstrap.runs", "recalld_bootstrap_runs_total",
      "Bootstrap runs finished: newly assigned by-city partitions read from <topic>.vectors."),
    G("kafka.vectors.bootstrap.running", "recalld_bootstrap_running", 1,
      "1 while a bootstrap run reads or installs."),
    G("kafka.vectors.bootstrap.paused", "recalld_bootstrap_paused_partitions", 1,
      "By-city partitions held until their cities are bootstrapped."),
    C("kafka.vectors.bootstrap.records", "recalld_bootstrap_records_total",
      "Records of <topic>.vectors read by bootstrap runs."),
    C("kafka.vectors.bootstrap.matched", "recalld_bootstrap_matched_total",
      "Records read of a city of the partitions being bootstrapped."),
    C("kafka.vectors.bootstrap.handed", "recalld_bootstrap_handed_total",
      "Records handed to the trainer to install (the newest per item)."),
    C("kafka.vectors.bootstrap.installed", "recalld_bootstrap_installed_total",
      "Rows written from a bootstrap record."),
    C("kafka.vectors.bootstrap.skipped", "recalld_bootstrap_skipped_total",
      "Bootstrap records not installed: the row is held with at least the record's count."),
    C("kafka.vectors.bootstrap.count", "recalld_bootstrap_clicks_total",
      "Clicks added to item counts by bootstrap installs."),
    C("kafka.vectors.bootstrap.invalid", "recalld_bootstrap_invalid_total",
      "Bootstrap records refused (not a record, another dimension, table full)."),
    C("kafka.vectors.bootstrap.lost", "recalld_bootstrap_lost_total",
      "Records of <topic>.vectors deleted by retention before a bootstrap read them."),
    C("kafka.vectors.bootstrap.gaps", "recalld_bootstrap_offset_gaps_total",
      "Offsets of <topic>.vectors without a record, seen by bootstrap runs (compaction)."),
    C("kafka.vectors.bootstrap.errors", "recalld_bootstrap_errors_total",
      "Errors of bootstrap runs (metadata, watermarks, reads)."),
    C("kafka.vectors.bootstrap.timeouts", "recalld_bootstrap_timeouts_total",
      "Bootstrap runs stopped at vectors.bootstrap_timeout_ms."),
    C("kafka.vectors.bootstrap.truncated", "recalld_bootstrap_truncated_total",
      "Bootstrap runs stopped at vectors.bootstrap_max_records."),
    C("kafka.vectors.bootstrap.revoked", "recalld_bootstrap_revoked_partitions_total",
      "By-city partitions revoked while their bootstrap run read or installed: their cities "
      "were dropped from the run."),
    C("kafka.vectors.bootstrap.cancelled", "recalld_bootstrap_cancelled_total",
      "Bootstrap runs ended early because every partition of the run was revoked."),
    C("kafka.vectors.bootstrap.dropped", "recalld_bootstrap_dropped_total",
      "Records read for a partition revoked before they were handed to the trainer."),
    C("kafka.vectors.bootstrap.abandoned", "recalld_bootstrap_abandoned_total",
      "Bootstrap runs stopped by a shutdown."),
    G("kafka.vectors.bootstrap.ms", "recalld_bootstrap_last_duration_seconds", MS_S,
      "The last bootstrap run: partitions assigned -> resumed (-0.001: none)."),
    /* a trainer shard's repartitioner: click topic -> <topic>.by-city */
    G("kafka.repartition.out_partitions", "recalld_repartition_topic_partitions", 1,
      "Partitions of <topic>.by-city (cities are spread over them by key)."),
    G("kafka.repartition.assigned", "recalld_repartition_partitions", 1,
      "Click-topic partitions this trainer's repartitioner reads."),
    G("kafka.repartition.lag", "recalld_repartition_consumer_lag", 1,
      "Click events not yet read by this repartitioner (-1 unknown)."),
    C("kafka.repartition.consumed", "recalld_repartition_consumed_total",
      "Click events read by the repartitioner."),
    C("kafka.repartition.forwarded", "recalld_repartition_forwarded_total",
      "Click events queued to <topic>.by-city keyed by city."),
    C("kafka.repartition.delivered", "recalld_repartition_delivered_total",
      "Forwarded events acknowledged by the broker."),
    C("kafka.repartition.unkeyed", "recalld_repartition_unkeyed_total",
      "Events without a decodable city, forwarded with their own key (a trainer refuses them)."),
    C("kafka.repartition.retries", "recalld_repartition_retries_total",
      "Forwards that failed and were queued again."),
    C("kafka.repartition.failed", "recalld_repartition_failed_total",
      "Forwards that could not be queued: offsets stop there until a restart or rebalance."),
    G("kafka.repartition.inflight", "recalld_repartition_inflight", 1,
      "Forwarded events not yet acknowledged."),
    C("kafka.repartition.paused", "recalld_repartition_paused_total",
      "Click batches refused at repartition.max_inflight (backpressure)."),
    C("kafka.repartition.stored_batches", "recalld_repartition_stored_batches_total",
      "Click batches fully delivered whose offsets were stored for commit."),
    C("kafka.repartition.repeats_dropped", "recalld_repartition_repeats_dropped_total",
      "By-city messages forwarded again by a repartitioner that took over (same source "
      "position): not trained."),
    /* a replica's reader of <topic>.vectors and its engine */
    G("kafka.vectors.assigned", "recalld_replica_vector_partitions", 1,
      "Partitions of <topic>.vectors a replica reads."),
    C("kafka.vectors.messages", "recalld_replica_vector_messages_total",
      "Records read from <topic>.vectors."),
    C("kafka.vectors.bytes", "recalld_replica_vector_bytes_total",
      "Bytes read from <topic>.vectors."),
    G("kafka.vectors.lag", "recalld_replica_vector_consumer_lag", 1,
      "Records of <topic>.vectors not yet read (-1 unknown)."),
    C("kafka.vectors.lost", "recalld_replica_vector_lost_total",
      "Records of <topic>.vectors deleted by retention before they were read."),
    C("kafka.vectors.offset_gaps", "recalld_replica_vector_offset_gaps_total",
      "Offsets of <topic>.vectors without a record (compaction)."),
    C("kafka.vectors.errors", "recalld_replica_vector_errors_total",
      "Errors of a replica's <topic>.vectors reader."),
    C("replica.records", "recalld_replica_records_total",
      "Vector records handed to a replica's engine."),
    C("replica.applied", "recalld_replica_records_applied_total",
      "Vector records newer than their item's version, applied."),
    C("replica.stale", "recalld_replica_records_stale_total",
      "Vector records not newer than their item's version (repeats, reordered): ignored."),
    C("replica.invalid", "recalld_replica_records_invalid_total",
      "Vector records refused (not a record, another dimension, table full)."),
    C("replica.created", "recalld_replica_items_created_total",
      "Items a replica first learnt from a vector record."),
    G("replica.lag", "recalld_replica_lag", 1,
      "Records of <topic>.vectors not yet handed over, as the engine last heard (-1 unknown)."),
    G("replica.staleness_ms", "recalld_replica_staleness_seconds", MS_S,
      "0 when caught up with <topic>.vectors, else the age of the newest record applied "
      "(-0.001: none yet)."),
    G("replica.newest_publish_ms", "recalld_replica_newest_publish_timestamp_seconds", MS_S,
      "Publish time of the newest vector record applied, epoch seconds."),
    G("replica.publish_to_applied_ms.p50", "recalld_replica_publish_to_applied_p50_seconds", MS_S,
      "Median time from a record's publish to its apply, over the last 4,096 records."),
    G("replica.publish_to_applied_ms.p99", "recalld_replica_publish_to_applied_p99_seconds", MS_S,
      "99th percentile of publish to apply, over the last 4,096 records."),
    G("replica.publish_to_applied_ms.samples", "recalld_replica_publish_to_applied_samples", 1,
      "Records in the publish-to-apply window."),
};

#undef C
#undef CL
#undef G
#undef GL
#undef S
#undef H
#undef I

/* 1 when path matches pattern, '*' standing for one whole segment. */
static int path_match(const char *pat, const char *path)
{
    while (*pat && *path) {
        if (*pat == '*') {
            pat++;
            path += strcspn(path, ".");
            continue;
        }
        if (*pat++ != *path++)
            return 0;
    }
    return *pat == '\0' && *path == '\0';
}

const rc_metrics_stat *rc_metrics_stat_find(const char *path)
{
    if (!path)
        return NULL;
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (path_match(table[i].path, path))
            return &table[i];
    return NULL;
}

const rc_metrics_stat *rc_metrics_stat_table(size_t *n)
{
    *n = sizeof table / sizeof *table;
    return table;
}

/* The value at a dotted path (no '*'), NULL when absent. */
static json_t *lookup(json_t *root, const char *path)
{
    char seg[64];
    json_t *v = root;
    while (v && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof seg)
            return NULL;
        memcpy(seg, path, n);
        seg[n] = '\0';
        v = json_object_get(v, seg);
        path += n + (path[n] == '.');
    }
    return v;
}

/* A number or boolean as a double; 0 when it is neither (then no sample). */
static int number(json_t *v, double *out)
{
    if (json_is_number(v))
        *out = json_number_value(v);
    else if (json_is_boolean(v))
        *out = json_is_true(v);
    else
        return 0;
    return 1;
}

static void render_row(rc_buf *out, json_t *root, const rc_metrics_stat *r)
{
    const char *star = strchr(r->path, '*');
    double v;
    if (!star) {
        if (!number(lookup(root, r->path), &v))
            return;
        rc_prom_family(out, r->metric, r->kind == RC_MSTAT_COUNTER ? "counter" : "gauge", r->help);
        if (v >= 0) /* -1 in stats: not known yet */
            rc_prom_sample(out, r->metric, NULL, v * r->scale);
        return;
    }
    /* a map: "a.b.*", the key as the label */
    char parent[128], lab[192];
    const char *key;
    json_t *obj, *x;
    snprintf(parent, sizeof parent, "%.*s", (int)(star - r->path - 1), r->path);
    if (!json_is_object(obj = lookup(root, parent)))
        return;
    rc_prom_family(out, r->metric, r->kind == RC_MSTAT_COUNTER ? "counter" : "gauge", r->help);
    json_object_foreach(obj, key, x) {
        rc_buf lb;
        if (!number(x, &v) || v < 0)
            continue;
        rc_buf_init(&lb, sizeof lab);
        rc_prom_label(&lb, r->label, key);
        if (!lb.overflow)
            rc_prom_sample(out, r->metric, lb.data, v * r->scale);
        rc_buf_free(&lb);
    }
}

void rc__metrics_render_stats(rc_buf *out, const char *stats, size_t len)
{
    json_error_t je;
    json_t *root = json_loadb(stats, len, 0, &je);
    if (!root)
        return; /* the stats text is ours: tests parse every page */
    int ckpt = json_is_true(lookup(root, "checkpoint.enabled"));
    for (size_t i = 0; i < sizeof table / sizeof *table; i++) {
        if (table[i].kind != RC_MSTAT_COUNTER && table[i].kind != RC_MSTAT_GAUGE)
            continue;
        if (!ckpt && strncmp(table[i].path, "checkpoint.", 11) == 0)
            continue; /* like the hook's families: none while checkpoints are off */
        render_row(out, root, &table[i]);
    }
    json_decref(root);
}
