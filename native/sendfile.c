/*
 * sendfile(2) for cache hits: the kernel moves the page-cache pages of a cached image to the socket, with no copy
 * through user space and no JavaScript per chunk (what nginx does with `sendfile on`).
 *
 * Each transfer runs on a thread of its own, because a socket is non-blocking and a slow client makes sendfile
 * return EAGAIN: the thread then waits in poll(2) for the socket to drain, which must not hold the event loop or
 * one of libuv's four pool threads. Both fds are dup(2)ed first, so JavaScript may close its own (a client that
 * goes away closes the socket) without this thread ever writing to a reused fd number; `cancel` stops it at the
 * next wake-up (at most POLL_MS later).
 *
 * A client on this host (loopback) gets copies instead: pread(2) into a 512 KiB buffer of the job's, send(2) from
 * it. Over loopback sendfile saves nothing (the receiver copies every byte out of the socket anyway), and it cost
 * both sides more than copies through one reused buffer (warm in the cache, is the likely reason): on this
 * project's 2-core VM a 1 GiB hit went from 2,300-3,900 MiB/s to 5,200-6,200, with about 45% less CPU on the
 * server and 40% less on the client (64-256 KiB and 1 MiB buffers did worse). Remote clients keep sendfile(2),
 * which spares the server a copy.
 *
 * A growing job follows a file that is still being written (a fill's consumers): it sends up to its end, then
 * sleeps until `extend` moves the end on or marks it final, so one thread serves a follower for the whole fill
 * instead of one thread per step (16 followers of a 1 GiB fill started 8,192 threads, and their JavaScript per
 * step cost the fill's own thread 1.5 CPU s per GiB).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <node_api.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#define POLL_MS 200
#define STEP (8 << 20)
#define COPY_BYTES (512 << 10)

typedef struct {
  int out_fd;
  int in_fd;
  off_t offset;
  /* The file offset the job may send up to; final: it will not move on (the job ends there). */
  int64_t end;
  int final;
  int64_t sent;
  /* Copy mode (a loopback client): bytes [offset, offset + buffered - buffer_at) wait in buffer (mapped when used). */
  int copy;
  char *buffer;
  size_t buffered;
  size_t buffer_at;
  int error;       /* errno of the failure, 0 for none */
  int truncated;   /* the file ended before the range did */
  int reached;     /* the job sent everything up to its final end */
  atomic_int cancelled;
  /* A paused job holds its dup'ed fds and waits for resume (or cancel) before it sends anything. */
  int paused;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  napi_threadsafe_function done;
  pthread_t thread;
} job_t;

/*
 * Copy mode: when everything buffered has gone out, reads the next bytes at the job's offset (at most `available`).
 * Returns 0 when the buffer holds bytes to send, -1 when the job must end (error or truncated set).
 */
static int fill_buffer(job_t *job, int64_t available) {
  if (job->buffer_at < job->buffered) return 0;
  if (job->buffer == NULL) {
    void *mapped = mmap(NULL, COPY_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) {
      job->error = errno;
      return -1;
    }
    job->buffer = mapped;
  }
  size_t want = available < COPY_BYTES ? (size_t)available : COPY_BYTES;
  for (;;) {
    ssize_t got = pread(job->in_fd, job->buffer, want, job->offset);
    if (got > 0) {
      job->buffered = (size_t)got;
      job->buffer_at = 0;
      return 0;
    }
    if (got == 0) {
      job->truncated = 1;
      return -1;
    }
    if (errno != EINTR) {
      job->error = errno;
      return -1;
    }
  }
}

static void *run(void *arg) {
  job_t *job = arg;
  pthread_mutex_lock(&job->lock);
  while (job->paused && !atomic_load(&job->cancelled)) pthread_cond_wait(&job->wake, &job->lock);
  pthread_mutex_unlock(&job->lock);
  while (!atomic_load(&job->cancelled)) {
    /* Only this thread moves offset; end and final move under the lock. */
    pthread_mutex_lock(&job->lock);
    while (job->offset >= job->end && !job->final && !atomic_load(&job->cancelled)) {
      pthread_cond_wait(&job->wake, &job->lock);
    }
    int64_t available = job->end - job->offset;
    pthread_mutex_unlock(&job->lock);
    if (atomic_load(&job->cancelled)) break;
    if (available <= 0) {
      job->reached = 1;
      break;
    }
    ssize_t n;
    if (job->copy) {
      int refilled = fill_buffer(job, available);
      if (refilled < 0) break;
      n = send(job->out_fd, job->buffer + job->buffer_at, job->buffered - job->buffer_at, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        job->buffer_at += (size_t)n;
        job->offset += n;
        job->sent += n;
        continue;
      }
    } else {
      size_t step = available < STEP ? (size_t)available : STEP;
      n = sendfile(job->out_fd, job->in_fd, &job->offset, step);
      if (n > 0) {
        job->sent += n;
        continue;
      }
      if (n == 0) {
        job->truncated = 1;
        break;
      }
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      struct pollfd ready = {.fd = job->out_fd, .events = POLLOUT};
      int polled = poll(&ready, 1, POLL_MS);
      if (polled < 0 && errno != EINTR) {
        job->error = errno;
        break;
      }
      if (polled > 0 && (ready.revents & (POLLERR | POLLHUP | POLLNVAL)) && !(ready.revents & POLLOUT)) {
        job->error = EPIPE;
        break;
      }
      continue;
    }
    job->error = errno;
    break;
  }
  if (job->buffer != NULL) munmap(job->buffer, COPY_BYTES);
  close(job->out_fd);
  close(job->in_fd);
  napi_call_threadsafe_function(job->done, job, napi_tsfn_blocking);
  napi_release_threadsafe_function(job->done, napi_tsfn_release);
  return NULL;
}

/* On the main thread: callback(errorCode | null, sentBytes, truncated, reached). */
static void finish(napi_env env, napi_value callback, void *context, void *data) {
  (void)context;
  job_t *job = data;
  pthread_join(job->thread, NULL);
  if (env != NULL) {
    napi_value args[4], undefined;
    if (job->error) {
      napi_create_int32(env, job->error, &args[0]);
    } else {
      napi_get_null(env, &args[0]);
    }
    napi_create_int64(env, job->sent, &args[1]);
    napi_get_boolean(env, job->truncated, &args[2]);
    napi_get_boolean(env, job->reached, &args[3]);
    napi_get_undefined(env, &undefined);
    napi_call_function(env, undefined, callback, 4, args, NULL);
  }
}

static void free_job(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  job_t *job = data;
  pthread_mutex_destroy(&job->lock);
  pthread_cond_destroy(&job->wake);
  free(job);
}

static void wake_job(job_t *job, int cancel) {
  pthread_mutex_lock(&job->lock);
  if (cancel) atomic_store(&job->cancelled, 1);
  job->paused = 0;
  pthread_cond_signal(&job->wake);
  pthread_mutex_unlock(&job->lock);
}

#define CHECK(call)                                                     \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error(env, "ERR_SENDFILE", "sendfile binding: " #call); \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

/*
 * start(outFd, inFd, offset, length, paused, growing, copy, callback) -> job (for resume, extend and cancel). A
 * growing job's `length` is only where it may send up to for now (see extend); `copy`: a loopback client (see above).
 */
static napi_value start(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) {
    napi_throw_type_error(env, "ERR_SENDFILE", "start(outFd, inFd, offset, length, paused, growing, copy, callback)");
    return NULL;
  }
  bool paused, growing, copy;
  CHECK(napi_get_value_bool(env, argv[4], &paused));
  CHECK(napi_get_value_bool(env, argv[5], &growing));
  CHECK(napi_get_value_bool(env, argv[6], &copy));
  int32_t out_fd, in_fd;
  int64_t offset, length;
  CHECK(napi_get_value_int32(env, argv[0], &out_fd));
  CHECK(napi_get_value_int32(env, argv[1], &in_fd));
  CHECK(napi_get_value_int64(env, argv[2], &offset));
  CHECK(napi_get_value_int64(env, argv[3], &length));
  job_t *job = calloc(1, sizeof(job_t));
  if (job == NULL) {
    napi_throw_error(env, "ERR_SENDFILE", "out of memory");
    return NULL;
  }
  job->out_fd = dup(out_fd);
  job->in_fd = dup(in_fd);
  if (job->out_fd < 0 || job->in_fd < 0) {
    int error = errno;
    if (job->out_fd >= 0) close(job->out_fd);
    if (job->in_fd >= 0) close(job->in_fd);
    free(job);
    napi_throw_error(env, "ERR_SENDFILE", error == EMFILE ? "dup: too many open files" : "dup failed");
    return NULL;
  }
  job->offset = (off_t)offset;
  job->end = offset + length;
  job->final = !growing;
  job->paused = paused;
  job->copy = copy;
  atomic_init(&job->cancelled, 0);
  pthread_mutex_init(&job->lock, NULL);
  pthread_cond_init(&job->wake, NULL);
  napi_value name, handle;
  CHECK(napi_create_string_utf8(env, "imgcache.sendfile", NAPI_AUTO_LENGTH, &name));
  /* The job is freed with its JS handle, which the caller keeps until the callback ran. */
  CHECK(napi_create_external(env, job, free_job, NULL, &handle));
  CHECK(napi_create_threadsafe_function(env, argv[7], NULL, name, 0, 1, NULL, NULL, NULL, finish, &job->done));
  if (pthread_create(&job->thread, NULL, run, job) != 0) {
    close(job->out_fd);
    close(job->in_fd);
    napi_release_threadsafe_function(job->done, napi_tsfn_abort);
    napi_throw_error(env, "ERR_SENDFILE", "cannot start a sendfile thread");
    return NULL;
  }
  return handle;
}

static job_t *job_of(napi_env env, napi_callback_info info, napi_value *argv, size_t count) {
  size_t argc = count;
  job_t *job = NULL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < count ||
      napi_get_value_external(env, argv[0], (void **)&job) != napi_ok) {
    napi_throw_type_error(env, "ERR_SENDFILE", "expected a job");
    return NULL;
  }
  return job;
}

static napi_value cancel(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  job_t *job = job_of(env, info, argv, 1);
  if (job) wake_job(job, 1);
  return NULL;
}

static napi_value resume(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  job_t *job = job_of(env, info, argv, 1);
  if (job) wake_job(job, 0);
  return NULL;
}

/* extend(job, end, final): a growing job may send up to file offset `end` (never less than before); final ends it there. */
static napi_value extend(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  job_t *job = job_of(env, info, argv, 3);
  if (!job) return NULL;
  int64_t end;
  bool final;
  CHECK(napi_get_value_int64(env, argv[1], &end));
  CHECK(napi_get_value_bool(env, argv[2], &final));
  pthread_mutex_lock(&job->lock);
  if (end > job->end) job->end = end;
  if (final) job->final = 1;
  pthread_cond_signal(&job->wake);
  pthread_mutex_unlock(&job->lock);
  return NULL;
}

/* peek(fd, buffer) -> bytes copied into buffer without taking them off the socket (MSG_PEEK), 0 when none yet */
static napi_value peek(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  void *data;
  size_t length;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_buffer_info(env, argv[1], &data, &length));
  ssize_t n;
  do {
    n = recv(fd, data, length, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) n = 0;
  if (n < 0) n = -1;
  CHECK(napi_create_int32(env, (int32_t)n, &result));
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor methods[] = {
      {"start", NULL, start, NULL, NULL, NULL, napi_default, NULL},
      {"cancel", NULL, cancel, NULL, NULL, NULL, napi_default, NULL},
      {"resume", NULL, resume, NULL, NULL, NULL, napi_default, NULL},
      {"extend", NULL, extend, NULL, NULL, NULL, napi_default, NULL},
      {"peek", NULL, peek, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, 5, methods);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
