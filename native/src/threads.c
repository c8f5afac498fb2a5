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
  atomic_int next, tickets;
} job;

/* The current job lives here, not on the caller's stack, so a worker that wakes late never
 * touches freed memory: the caller closes the job when its chunks are gone and waits only for
 * the workers inside it (`active`), never for sleeping ones. */
static struct {
  pthread_mutex_t mu, busy;
  pthread_cond_t cv;
  int workers;
  atomic_uint gen;
  atomic_int active, closed;
  job job;
} P = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 1,
       {0}};

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
    atomic_fetch_add(&P.active, 1); /* then check closed: pairs with the caller's store/load */
    if (!atomic_load(&P.closed) && atomic_fetch_add(&P.job.tickets, 1) < P.job.want)
      run_chunks(&P.job);
    atomic_fetch_sub(&P.active, 1);
  }
  return NULL;
}

static void after_fork_child(void) { /* the workers did not survive the fork */
  pthread_mutex_init(&P.mu, NULL);
  pthread_mutex_init(&P.busy, NULL);
  pthread_cond_init(&P.cv, NULL);
  P.workers = 0;
  atomic_store(&P.active, 0);
  atomic_store(&P.closed, 1);
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
  P.job.fn = fn; P.job.ctx = ctx; P.job.n = n; P.job.chunk = chunk < 1 ? 1 : chunk;
  P.job.want = threads - 1;
  atomic_store(&P.job.next, 0);
  atomic_store(&P.job.tickets, 0);
  atomic_store(&P.closed, 0);
  pthread_mutex_lock(&P.mu);
  atomic_fetch_add(&P.gen, 1);
  pthread_cond_broadcast(&P.cv);
  pthread_mutex_unlock(&P.mu);
  run_chunks(&P.job);
  atomic_store(&P.closed, 1);
  while (atomic_load(&P.active) > 0) sched_yield(); /* workers still inside this job */
  pthread_mutex_unlock(&P.busy);
}
