/* eval_int — internals shared by the evaluator's sources (not installed). */
#ifndef RECALLD_EVAL_INT_H
#define RECALLD_EVAL_INT_H

#include "recalld/eval.h"

/* The two-tower rows of rc_eval_methods (src/eval_tower.c): features none,
 * interest tags, everything (or --features). */
int rc__eval_run_tower_nofeat(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el);
int rc__eval_run_tower_tags(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el);
int rc__eval_run_tower_all(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el);

/* The session co-occurrence rows of rc_eval_methods (src/eval_cooc.c): the
 * daemon's live channel alone, and fused with skip-gram recall. */
int rc__eval_run_itemknn_live(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el);
int rc__eval_run_fused(rc_eval_env *env, rc_eval_report *rep, char *eb, size_t el);

/* prequential-fused's second channel (src/eval_cooc.c): the daemon's
 * co-occurrence channel (defaults + --stream-set cooc.*) fed by the stream
 * the engine learns from, each click with its session's previous clicks,
 * and a predictor fusing it with an embedding recall (rc_cooc_fuse at
 * cooc.fuse_weight, *weight): the daemon's "mode":"fused" on a live engine
 * (prequential-fused, stream-warm-fused). */
typedef struct rc__eval_live_fused rc__eval_live_fused;
int rc__eval_live_fused_create(const rc_eval_env *env, rc__eval_live_fused **out, float *weight,
                               char *eb, size_t el);
void rc__eval_live_fused_click(rc__eval_live_fused *lf, const rc_clicklog *log, size_t i);
/* s's training sessions into the channel (a warm start: the clicks the
 * batch model learnt, which a running daemon's channel has seen too). */
int rc__eval_live_fused_prefeed(rc__eval_live_fused *lf, const rc_eval_split *s, char *eb,
                                size_t el);
/* pr fuses em's recall (em stays the caller's) with the channel. */
void rc__eval_live_fused_predictor(rc__eval_live_fused *lf, rc_eval_embed *em,
                                   rc_eval_predictor *pr);
void rc__eval_live_fused_destroy(rc__eval_live_fused *lf); /* NULL-safe */

/* Runs predictor pr over every prediction of env->split into rep->m (and
 * rep->slice with env->slices), accumulating into env->acc when set, else
 * into an accumulator of its own. Errors are prefixed with what. */
int rc__eval_score_all(const rc_eval_env *env, const rc_eval_predictor *pr, const char *what,
                       rc_eval_report *rep, char *eb, size_t el);

/* stream-daily-gated's gate before the install at split s's start
 * (src/eval_gate.c): over the window of st->hours before s's cut, the
 * running table of e and a challenger trained with bo on the sessions that
 * ended before the window (from e's table, from random vectors, or both
 * and the better one: env->rebuild) are scored frozen; *install = the
 * rebuild to install, RC_EVAL_REBUILD_LIVE + 1 or _FRESH + 1, when the
 * challenger's HR@50 >= st->ratio x the live table's (and its paired lead
 * >= st->min_z), or when the window has nothing to judge on (st->unjudged:
 * the rebuild of env->rebuild, live for both); 0 keeps the live table.
 * st's counts are updated. 0 or RC_E* (eb). */
struct rc_engine;
int rc__eval_gate_judge(const rc_eval_env *env, const rc_eval_split *s, struct rc_engine *e,
                        const rc_train_opts *bo, rc_eval_gate_stats *st, int *install, char *eb,
                        size_t el);

/* qsort_r order of record indices of the clicklog ud: by time, then index. */
int rc__eval_by_time(const void *a, const void *b, void *ud);

/* A method's pass is over: rep->m, and rep->slice when a had slice masks
 * (the env's: a->slices = env->slices after rc_eval_acc_init). */
void rc__eval_acc_report(const rc_eval_acc *a, const rc_eval_split *s, rc_eval_report *rep);

/* The prequential pass (the prequential methods' one loop): the streaming
 * engine (warm: started from a batch model of sp[0]'s training sessions,
 * trained on env->split's mask, so env->split must be sp[0]; else cold) is
 * fed every click of the sessions sp[n-1] considers, sp[0]'s training
 * sessions excepted when warm, in time order; each prediction of split
 * sp[k] is made into acc[k] just before its click is applied. The splits
 * (the daily protocol's periods) must have disjoint predictions. rep gets
 * the settings and acc[n-1]'s metrics. */
/* Sets em's query to the daemon's user query with env's recall settings
 * (defaults + --stream-set), unless env->query_items. 0 or RC_E* (eb). */
int rc__eval_embed_query_setup(const rc_eval_env *env, rc_eval_embed *em, char *eb, size_t el);

int rc__eval_stream(rc_eval_env *env, const rc_eval_split *const *sp, size_t n,
                    rc_eval_acc *const *acc, int warm, rc_eval_report *rep, char *eb, size_t el);

/* The streaming engine's configuration for batch settings o (NULL: the
 * daemon's defaults): the training settings, then env->stream_set. */
struct rc_config;
int rc__eval_stream_config(const rc_eval_env *env, const rc_train_opts *o, struct rc_config *c,
                           char *eb, size_t el);

/* The daemon's index and ranking as env configures them (defaults +
 * --stream-set index.*, recall.*): its options *io, the recall over-fetch
 * *overfetch (env->overfetch when set) and recall.popularity_weight
 * *pop_weight (each may be NULL). 0 or RC_E* (eb). */
int rc__eval_index_config(const rc_eval_env *env, rc_index_opts *io, float *overfetch,
                          float *pop_weight, char *eb, size_t el);

/* rc_eval_index_build with env's index options (rc__eval_index_config); the
 * word2vec table t gets the daemon's recall.popularity_weight, as the
 * engine's own table has it (the two-tower's serving table has none). */
int rc__eval_index_build(const rc_eval_env *env, rc_table *t, rc_index **ix, char *eb, size_t el);

/* rc_eval_embed_create for env: the daemon's over-fetch, env->exact. */
int rc__eval_embed_new(const rc_eval_env *env, const rc_eval_split *s, const rc_table *t,
                       rc_index *ix, rc_eval_embed **em, char *eb, size_t el);

/* The streaming knobs of configuration c. */
void rc__eval_stream_knobs(const struct rc_config *c, rc_eval_stream_knobs *k);

/* Trains the batch model with settings o on env->split's training sessions
 * into a new temp file (path: room for 256 bytes; the caller unlinks it). */
int rc__eval_warm_model(const rc_eval_env *env, const rc_train_opts *o, char *path, char *eb,
                        size_t el);

#endif
