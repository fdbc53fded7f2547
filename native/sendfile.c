/*
 * sendfile(2) for the hit path (src/proxy/kernel-send.ts): the kernel copies
 * a stored blob from the page cache straight into the client's socket. Node
 * removed its own sendfile binding long ago and no maintained package offers
 * one; reading into a buffer and writing it costs a second copy, which was a
 * third of the CPU of warm hits in profiles. Node-API, so one build serves
 * every Node version.
 *
 * sendfile(outFd, inFd, offset, count) -> bytes sent (0 at end of file), or
 * -errno (-EAGAIN: the non-blocking socket is full).
 * cork(fd, on) -> 0 or -errno: TCP_CORK around a response head and the first
 * piece of its body, so the head does not leave in a segment of its own.
 * execve(file, argv, env, keep) -> -errno (returns only on failure): the bin
 * restarts itself with its node flags when started without them
 * (src/util/node-command.ts). Node marks every descriptor it finds at start
 * close-on-exec, stdio included; this clears that flag on descriptors
 * 0..keep-1 first (stdio, and the sockets systemd passed from fd 3). Node 20
 * has no process.execve, and Node's own keeps only stdio.
 */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include <sys/socket.h>
#include <sys/sendfile.h>
#include <sys/types.h>

static napi_value Sendfile(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4) {
    napi_throw_type_error(env, NULL, "sendfile(outFd, inFd, offset, count)");
    return NULL;
  }
  int32_t out, in;
  int64_t offset, count;
  if (napi_get_value_int32(env, argv[0], &out) != napi_ok || napi_get_value_int32(env, argv[1], &in) != napi_ok ||
      napi_get_value_int64(env, argv[2], &offset) != napi_ok || napi_get_value_int64(env, argv[3], &count) != napi_ok ||
      out < 0 || in < 0 || offset < 0 || count < 0) {
    napi_throw_type_error(env, NULL, "sendfile: descriptors, offset and count must be non-negative integers");
    return NULL;
  }
  off_t pos = (off_t)offset;
  ssize_t n;
  do {
    n = sendfile(out, in, &pos, (size_t)count);
  } while (n < 0 && errno == EINTR);
  napi_value result;
  napi_create_int64(env, n < 0 ? -(int64_t)errno : (int64_t)n, &result);
  return result;
}

/* cork(fd, on) -> 0 or -errno: TCP_CORK, so a response head and its body leave in full segments. */
static napi_value Cork(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  bool on;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_bool(env, argv[1], &on) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "cork(fd, on)");
    return NULL;
  }
  int value = on ? 1 : 0;
  int r = setsockopt(fd, IPPROTO_TCP, TCP_CORK, &value, sizeof value);
  napi_value result;
  napi_create_int32(env, r < 0 ? -errno : 0, &result);
  return result;
}

/* A JS string array as a NULL-terminated char* array (malloc'd; NULL on a bad value). */
static char **strings(napi_env env, napi_value array) {
  uint32_t n;
  if (napi_get_array_length(env, array, &n) != napi_ok) return NULL;
  char **out = calloc(n + 1, sizeof(char *));
  for (uint32_t i = 0; out && i < n; i++) {
    napi_value item;
    size_t len;
    if (napi_get_element(env, array, i, &item) != napi_ok || napi_get_value_string_utf8(env, item, NULL, 0, &len) != napi_ok ||
        !(out[i] = malloc(len + 1))) {
      for (uint32_t j = 0; j < i; j++) free(out[j]);
      free(out);
      return NULL;
    }
    napi_get_value_string_utf8(env, item, out[i], len + 1, &len);
  }
  return out;
}

static void release(char **list) {
  for (char **p = list; p && *p; p++) free(*p);
  free(list);
}

static napi_value Execve(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  char file[4096];
  size_t len;
  int32_t keep;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4 ||
      napi_get_value_string_utf8(env, argv[0], file, sizeof file, &len) != napi_ok || len >= sizeof file - 1 ||
      napi_get_value_int32(env, argv[3], &keep) != napi_ok || keep < 0) {
    napi_throw_type_error(env, NULL, "execve(file, argv, env, keep)");
    return NULL;
  }
  char **args = strings(env, argv[1]), **vars = strings(env, argv[2]);
  if (!args || !vars) {
    release(args);
    release(vars);
    napi_throw_type_error(env, NULL, "execve: argv and env must be arrays of strings");
    return NULL;
  }
  for (int fd = 0; fd < keep; fd++) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  execve(file, args, vars);
  int failed = errno;
  release(args);
  release(vars);
  napi_value result;
  napi_create_int32(env, -failed, &result);
  return result;
}

static napi_value Trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
#ifdef __GLIBC__
  napi_create_int32(env, malloc_trim(0), &result);
#else
  napi_create_int32(env, -1, &result);
#endif
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "sendfile", NAPI_AUTO_LENGTH, Sendfile, NULL, &fn);
  napi_set_named_property(env, exports, "sendfile", fn);
  napi_create_function(env, "cork", NAPI_AUTO_LENGTH, Cork, NULL, &fn);
  napi_set_named_property(env, exports, "cork", fn);
  napi_create_function(env, "execve", NAPI_AUTO_LENGTH, Execve, NULL, &fn);
  napi_set_named_property(env, exports, "execve", fn);
  napi_create_function(env, "trim", NAPI_AUTO_LENGTH, Trim, NULL, &fn);
  napi_set_named_property(env, exports, "trim", fn);
  return exports;
}
