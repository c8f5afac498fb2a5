/* ek_parallel_for: a persistent pool of worker threads shared by every kernel call.
 *
 * Why persistent: a call creating its threads pays pthread_create + join each time, and on a
 * busy machine a new thread may wait a scheduler tick before it first runs; layer after layer
 * that dominated small calls. Workers spin briefly after a job (the next layer usually follows
 * within microseconds), then sleep on a condition variable. Work is handed out in chunks from
 * an atomic counter (about 8 per thread), so a core busy with another process delays only its
 * current chunk. One call uses the pool at a time; a concurrent caller (another Python thread:
 * ctypes releases the GIL) runs its work on its own thread instead of waiting. After fork() the
 * child starts with no workers and builds a new pool on first use.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "ek_internal.h"

#define EK_MAX_WORKERS 63
#define EK_SPIN_ROUNDS 2000 /* PAUSE/YIELD polls (tens of us) before a worker sleeps */

typedef struct {
  void (*fn)(void *, int, int);
  void *ctx;
  int n, chunk, want; /* want: workers (besides the caller) allowed to take chunks */
  atomic_int next, tickets, pending;
} job;

static struct {
  pthread_mutex_t mu, busy;
  pthread_cond_t cv;
  int workers;
  atomic_uint gen;
  job *_Atomic cur;
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL};

static void run_chunks(job *j) {
  for (;;) {
    int i0 = atomic_fetch_add(&j->next, j->chunk);
    if (i0 >= j->n) break;
    j->fn(j->ctx, i0, i0 + j->chunk < j->n ? i0 + j->chunk : j->n);
  }
}

static void *worker(void *arg) {
  unsigned seen = (unsigned)(size_t)arg;
  for (;;) {
    unsigned g = atomic_load(&P.gen);
    for (int i = 0; i < EK_SPIN_ROUNDS && g == seen; i++) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#elif defined(__aarch64__)
      __asm__ volatile("yield");
#endif
      g = atomic_load(&P.gen);
    }
    if (g == seen) {
      pthread_mutex_lock(&P.mu);
      while ((g = atomic_load(&P.gen)) == seen) pthread_cond_wait(&P.cv, &P.mu);
      pthread_mutex_unlock(&P.mu);
    }
    seen = g;
    job *j = atomic_load(&P.cur);
    if (atomic_fetch_add(&j->tickets, 1) < j->want) run_chunks(j);
    atomic_fetch_sub(&j->pending, 1);
  }
  return NULL;
}

static void after_fork_child(void) { /* the workers did not survive the fork */
  pthread_mutex_init(&P.mu, NULL);
  pthread_mutex_init(&P.busy, NULL);
  pthread_cond_init(&P.cv, NULL);
  P.workers = 0;
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, after_fork_child); }

/* Start workers up to `want` (called with P.busy held, so no job is running). */
static void grow(int want) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, register_atfork);
  if (want > EK_MAX_WORKERS) want = EK_MAX_WORKERS;
  while (P.workers < want) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, worker, (void *)(size_t)atomic_load(&P.gen));
    pthread_attr_destroy(&attr);
    if (rc != 0) break; /* fewer workers: the caller's loop takes their share */
    P.workers++;
  }
}

void ek_parallel_for(int threads, int n, void (*fn)(void *, int, int), void *ctx) {
  if (threads <= 0) threads = ek_default_threads();
  if (threads > n) threads = n;
  if (threads <= 1 || pthread_mutex_trylock(&P.busy) != 0) {
    if (n > 0) fn(ctx, 0, n);
    return;
  }
  grow(threads - 1);
  int chunk = n / (threads * 8);
  job j = {fn, ctx, n, chunk < 1 ? 1 : chunk, threads - 1, 0, 0, P.workers};
  atomic_store(&P.cur, &j);
  pthread_mutex_lock(&P.mu);
  atomic_fetch_add(&P.gen, 1);
  pthread_cond_broadcast(&P.cv);
  pthread_mutex_unlock(&P.mu);
  run_chunks(&j);
  while (atomic_load(&j.pending) > 0) sched_yield(); /* every worker has let go of j */
  pthread_mutex_unlock(&P.busy);
}
