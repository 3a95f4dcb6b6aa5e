/*
 * exec_bpf.c - the exec BPF program's side in the library: loads native/exec_args.bpf.o
 * (embedded at build time) with libbpf, which is opened with dlopen() so that a system
 * without libbpf.so.1 still runs procMonitor (it reads /proc instead), attaches it to
 * sched_process_exec, and finds each exec's entry in the program's ring buffer for the
 * reader. Only the reader thread calls these, one at a time.
 *
 * The ring is read in place (kernel/bpf/ringbuf.c: a consumer page, a producer page, then
 * the data pages mapped twice, so an entry that wraps is contiguous). Entries are indexed
 * in ring order as they come and freed once matched with their connector exec; the
 * consumer position moves past the freed prefix. An entry that is never matched (its
 * connector message was lost) is freed once PC_BPF_STALE_NS older than the exec in hand.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "exec_bpf.h"

#ifdef PC_NO_BPF

int pc_bpf_open(struct pc_bpf **out) {
  *out = NULL;
  return -ENOSYS;
}
void pc_bpf_close(struct pc_bpf *b) {
  (void)b;
}
const struct pc_bpf_exec *pc_bpf_take(struct pc_bpf *b, uint32_t pid, uint64_t event_ns,
                                      uint32_t *len) {
  (void)b, (void)pid, (void)event_ns, (void)len;
  return NULL;
}
uint64_t pc_bpf_dropped(const struct pc_bpf *b) {
  (void)b;
  return 0;
}

#else

#include <bpf/libbpf.h>

/* The object file, linked in by the assembler (PC_BPF_OBJ: its path at build time). */
__asm__(".section .rodata\n"
        ".balign 8\n"
        ".hidden pc_bpf_obj\n"
        "pc_bpf_obj:\n"
        ".incbin \"" PC_BPF_OBJ "\"\n"
        ".hidden pc_bpf_obj_end\n"
        "pc_bpf_obj_end:\n"
        ".previous\n");
extern const char pc_bpf_obj[], pc_bpf_obj_end[];

#define PC_BPF_INDEX 4096u            /* entries indexed and not yet freed, at most */
#define PC_BPF_STALE_NS 2000000000ull /* an entry this much older than the exec in hand */
#define PC_RB_BUSY (1u << 31)         /* BPF_RINGBUF_BUSY_BIT: still being written */
#define PC_RB_DISCARD (1u << 30)      /* BPF_RINGBUF_DISCARD_BIT */
#define PC_RB_HDR 8u                  /* BPF_RINGBUF_HDR_SZ */

_Static_assert((PC_BPF_RING_BYTES & (PC_BPF_RING_BYTES - 1)) == 0, "the ring is a power of 2");
_Static_assert(offsetof(struct pc_bpf_exec, data) == PC_BPF_HEAD, "the entry's head");

/* The few libbpf calls, found with dlsym(): libbpf is optional at run time. */
struct pc_bpf_api {
  libbpf_print_fn_t (*set_print)(libbpf_print_fn_t fn);
  struct bpf_object *(*open_mem)(const void *buf, size_t size,
                                 const struct bpf_object_open_opts *opts);
  int (*load)(struct bpf_object *obj);
  struct bpf_program *(*find_prog)(const struct bpf_object *obj, const char *name);
  struct bpf_link *(*attach)(const struct bpf_program *prog);
  struct bpf_map *(*find_map)(const struct bpf_object *obj, const char *name);
  int (*map_fd)(const struct bpf_map *map);
  void *(*initial_value)(struct bpf_map *map, size_t *size);
  int (*link_destroy)(struct bpf_link *link);
  void (*close)(struct bpf_object *obj);
};

struct pc_bpf_slot {
  uint64_t pos;   /* the entry's place in the ring (its header) */
  uint64_t ktime; /* its ktime_ns */
  uint32_t pid;
  uint32_t len; /* its length without the header; 0 = freed, or not an entry */
};

struct pc_bpf {
  struct pc_bpf_api api;
  struct bpf_object *obj; /* closed once attached: the link keeps the program and its maps */
  struct bpf_link *link;
  size_t page;
  size_t bss_size;
  unsigned long *cons;       /* the consumer page: ours to write */
  const unsigned long *prod; /* the producer page, then the data, mapped twice */
  const uint8_t *data;
  const volatile uint64_t *dropped; /* the program's .bss (pc_bpf_dropped), mapped here */
  uint64_t indexed;                 /* ring position up to which entries are indexed */
  uint32_t head, count;             /* the index: a FIFO in ring order */
  struct pc_bpf_slot slot[PC_BPF_INDEX];
};

/* libbpf's messages would go to stderr unasked: the caller reports what failed. */
static int pc_bpf_quiet(enum libbpf_print_level level, const char *fmt, va_list ap) {
  (void)level, (void)fmt, (void)ap;
  return 0;
}

static int pc_bpf_resolve(struct pc_bpf_api *api) {
  void *lib = dlopen("libbpf.so.1", RTLD_NOW | RTLD_LOCAL);
  struct {
    void **fn;
    const char *name;
  } want[] = {
      {(void **)&api->set_print, "libbpf_set_print"},
      {(void **)&api->open_mem, "bpf_object__open_mem"},
      {(void **)&api->load, "bpf_object__load"},
      {(void **)&api->find_prog, "bpf_object__find_program_by_name"},
      {(void **)&api->attach, "bpf_program__attach"},
      {(void **)&api->find_map, "bpf_object__find_map_by_name"},
      {(void **)&api->map_fd, "bpf_map__fd"},
      {(void **)&api->initial_value, "bpf_map__initial_value"},
      {(void **)&api->link_destroy, "bpf_link__destroy"},
      {(void **)&api->close, "bpf_object__close"},
  };

  if (!lib)
    return -ELIBACC;
  /* Never dlclose()d: a library loaded once for the process's life. */
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    *want[i].fn = dlsym(lib, want[i].name);
    if (!*want[i].fn)
      return -ELIBACC;
  }
  return 0;
}

static int pc_bpf_map_ring(struct pc_bpf *b, int fd) {
  void *cons, *prod;

  b->page = (size_t)sysconf(_SC_PAGESIZE);
  cons = mmap(NULL, b->page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (cons == MAP_FAILED)
    return -errno;
  prod = mmap(NULL, b->page + 2 * (size_t)PC_BPF_RING_BYTES, PROT_READ, MAP_SHARED, fd,
              (off_t)b->page);
  if (prod == MAP_FAILED) {
    int err = -errno;

    munmap(cons, b->page);
    return err;
  }
  b->cons = cons;
  b->prod = prod;
  b->data = (const uint8_t *)prod + b->page;
  b->indexed = __atomic_load_n(b->cons, __ATOMIC_ACQUIRE);
  return 0;
}

/* The program's .bss, mapped here so that the object (and libbpf's copy) can go. */
static int pc_bpf_map_bss(struct pc_bpf *b, struct bpf_map *bss) {
  void *p;
  int fd = b->api.map_fd(bss);

  if (!b->api.initial_value(bss, &b->bss_size) || b->bss_size < sizeof(uint64_t) || fd < 0)
    return -ENOENT;
  p = mmap(NULL, b->bss_size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return -errno;
  b->dropped = p;
  return 0;
}

static int pc_bpf_load(struct pc_bpf *b) {
  struct bpf_map *ring, *bss;
  int fd, rc;

  b->api.set_print(pc_bpf_quiet);
  b->obj = b->api.open_mem(pc_bpf_obj, (size_t)(pc_bpf_obj_end - pc_bpf_obj), NULL);
  if (!b->obj)
    return errno ? -errno : -EINVAL;
  if (b->api.load(b->obj) < 0)
    return errno ? -errno : -EINVAL;
  ring = b->api.find_map(b->obj, "pc_execs");
  bss = b->api.find_map(b->obj, ".bss");
  if (!ring || !bss || (fd = b->api.map_fd(ring)) < 0)
    return -ENOENT;
  rc = pc_bpf_map_ring(b, fd);
  if (rc == 0)
    rc = pc_bpf_map_bss(b, bss);
  if (rc < 0)
    return rc;
  b->link = b->api.attach(b->api.find_prog(b->obj, "pc_on_exec"));
  if (!b->link)
    return errno ? -errno : -EINVAL;
  /* The link holds the program, the program its maps, the mappings their pages: the object
   * and what libbpf kept of it (ELF, BTF, instructions) are no longer needed. */
  b->api.close(b->obj);
  b->obj = NULL;
  return 0;
}

/*
 * libbpf parses the kernel's BTF (/sys/kernel/btf/vmlinux, about 5.5 MiB, into some 11 MiB)
 * and frees it again. glibc would then raise its mmap threshold to the size of the largest
 * block freed, and its trim threshold to twice that, for the rest of the process's life:
 * what Deno later frees below ~11 MiB would stay resident (measured: some 3 MiB more after a
 * storm). Fixing both at glibc's defaults first keeps blocks that large in mappings of their
 * own, given back when freed; what small blocks the load left free go back at once.
 */
static void pc_bpf_malloc_policy(void) {
  (void)mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  (void)mallopt(M_TRIM_THRESHOLD, 128 * 1024);
}

int pc_bpf_open(struct pc_bpf **out) {
  struct pc_bpf *b = calloc(1, sizeof(*b));
  int rc;

  *out = NULL;
  if (!b)
    return -ENOMEM;
  rc = pc_bpf_resolve(&b->api);
  if (rc == 0) {
    pc_bpf_malloc_policy();
    rc = pc_bpf_load(b);
    (void)malloc_trim(0);
  }
  if (rc < 0) {
    pc_bpf_close(b);
    return rc;
  }
  *out = b;
  return 0;
}

void pc_bpf_close(struct pc_bpf *b) {
  if (!b)
    return;
  if (b->link)
    b->api.link_destroy(b->link);
  if (b->prod)
    munmap((void *)b->prod, b->page + 2 * (size_t)PC_BPF_RING_BYTES);
  if (b->cons)
    munmap(b->cons, b->page);
  if (b->dropped)
    munmap((void *)b->dropped, b->bss_size);
  if (b->obj)
    b->api.close(b->obj);
  free(b);
}

uint64_t pc_bpf_dropped(const struct pc_bpf *b) {
  return b && b->dropped ? *b->dropped : 0;
}

static struct pc_bpf_slot *pc_bpf_at(struct pc_bpf *b, uint32_t i) {
  return &b->slot[(b->head + i) % PC_BPF_INDEX];
}

/* Indexes the entries committed since the last call, in ring order. */
static void pc_bpf_index(struct pc_bpf *b) {
  uint64_t prod = __atomic_load_n(b->prod, __ATOMIC_ACQUIRE);

  while (b->indexed < prod && b->count < PC_BPF_INDEX) {
    const uint8_t *hdr = b->data + (b->indexed & (PC_BPF_RING_BYTES - 1));
    uint32_t word = __atomic_load_n((const uint32_t *)hdr, __ATOMIC_ACQUIRE);
    uint32_t len = word & ~(PC_RB_BUSY | PC_RB_DISCARD);
    struct pc_bpf_slot *s;

    if (word & PC_RB_BUSY)
      break; /* still being written: its exec has not reached the connector yet */
    s = pc_bpf_at(b, b->count++);
    s->pos = b->indexed;
    s->len = 0;
    b->indexed += (len + PC_RB_HDR + 7u) & ~7ull;
    if (len >= PC_BPF_HEAD && !(word & PC_RB_DISCARD)) {
      const struct pc_bpf_exec *e = (const void *)(hdr + PC_RB_HDR);

      s->ktime = e->ktime_ns;
      s->pid = e->pid;
      s->len = len;
    }
  }
}

/* Moves the consumer past the freed prefix: the kernel may reuse that room. */
static void pc_bpf_release(struct pc_bpf *b) {
  uint64_t to = 0;
  bool moved = false;

  while (b->count > 0 && b->slot[b->head].len == 0) {
    struct pc_bpf_slot *s = &b->slot[b->head];
    const uint8_t *hdr = b->data + (s->pos & (PC_BPF_RING_BYTES - 1));
    uint32_t len = *(const uint32_t *)hdr & ~(PC_RB_BUSY | PC_RB_DISCARD);

    to = s->pos + ((len + PC_RB_HDR + 7u) & ~7ull);
    moved = true;
    b->head = (b->head + 1) % PC_BPF_INDEX;
    b->count--;
  }
  if (moved)
    __atomic_store_n(b->cons, (unsigned long)to, __ATOMIC_RELEASE);
}

const struct pc_bpf_exec *pc_bpf_take(struct pc_bpf *b, uint32_t pid, uint64_t event_ns,
                                      uint32_t *len) {
  struct pc_bpf_slot *best = NULL;

  pc_bpf_release(b); /* what the last call returned has been copied by now */
  pc_bpf_index(b);
  for (uint32_t i = 0; i < b->count; i++) {
    struct pc_bpf_slot *s = pc_bpf_at(b, i);

    if (s->len == 0)
      continue;
    if (s->ktime + PC_BPF_STALE_NS < event_ns) {
      s->len = 0; /* its exec never came (lost on the connector): give the room back */
    } else if (s->pid == pid && s->ktime <= event_ns) {
      if (best)
        best->len = 0; /* an older exec of this pid whose message was lost */
      best = s;
    }
  }
  if (!best)
    return NULL;
  *len = best->len;
  best->len = 0; /* freed at the next call, once the caller has copied it */
  return (const void *)(b->data + (best->pos & (PC_BPF_RING_BYTES - 1)) + PC_RB_HDR);
}

#endif
