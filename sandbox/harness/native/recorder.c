/* Referee's native launch recorder.
 *
 * Loaded into a harness process before any submitted code, it asks CUPTI's activity API for every
 * kernel, memcpy and memset the process runs on the GPU and writes them, as compact binary records,
 * to a file descriptor whose reading end only the judge holds. Records are written from CUPTI's
 * buffer-completed callback (CUPTI's own thread, or the thread that flushes), so they leave the
 * process as the GPU completes the work: the candidate's Python never holds them.
 *
 * Nothing is linked at build time: CUPTI and the CUDA driver are resolved with dlopen/dlsym when
 * recording starts; the headers are used for types only. The stream format is documented in
 * sandbox/native_evidence.py (the judge's parser) and docs/native-recorder.md; the two must agree.
 *
 * What this cannot do: a candidate that runs native code in the same process (ctypes) can call
 * CUPTI itself, patch this library's memory, or write into the descriptor. The judge detects what
 * it can from the stream (sequence numbers, markers, flushes); the rest is stated as advisory.
 */
#define _GNU_SOURCE
#include <cupti.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define EXPORT __attribute__((visibility("default")))

/* ---- the stream format (little-endian; every record starts with this header) ---- */
#define REC_MAGIC 0x52464552u /* bytes "REFR" */
#define REC_FORMAT 1u
enum {
    REC_HELLO = 1,
    REC_KERNEL = 2,
    REC_MEMCPY = 3,
    REC_MEMSET = 4,
    REC_MARK = 5,
    REC_FLUSH = 6,
    REC_ERROR = 7,
};
#define MAX_NAME 1024
#define CUPTI_BUFFER_BYTES (1u << 20)
#define FLUSH_PERIOD_MS 20u

#pragma pack(push, 1)
typedef struct { uint32_t magic; uint16_t kind; uint16_t size; uint32_t seq; } rec_header;
typedef struct { rec_header h; uint32_t format, cupti_runtime, cupti_compiled, pid; uint64_t host_ns, gpu_ns, discarded; } rec_hello;
typedef struct {
    rec_header h;
    uint64_t start, end;
    uint32_t stream, correlation, device, context;
    int32_t grid[3], block[3];
    uint16_t name_len; /* followed by name_len bytes, no terminator */
} rec_kernel;
typedef struct { rec_header h; uint64_t start, end; uint32_t stream, correlation; uint64_t bytes; uint8_t copy_kind, src_kind, dst_kind, pad; } rec_memcpy;
typedef struct { rec_header h; uint64_t start, end; uint32_t stream, correlation; uint64_t bytes; uint32_t value; uint16_t memory_kind, pad; } rec_memset;
typedef struct { rec_header h; uint32_t label; int32_t status; uint32_t stream; uint32_t pad; uint64_t host_ns, gpu_ns; } rec_mark;
typedef struct { rec_header h; uint32_t written; uint32_t pad; uint64_t dropped, host_ns, gpu_ns; } rec_flush;
typedef struct { rec_header h; int32_t code; uint16_t text_len; } rec_error; /* followed by text */
#pragma pack(pop)

/* ---- what is resolved at run time ---- */
static struct {
    __typeof__(cuptiGetVersion) *GetVersion;
    __typeof__(cuptiGetResultString) *GetResultString;
    __typeof__(cuptiGetTimestamp) *GetTimestamp;
    __typeof__(cuptiGetStreamIdEx) *GetStreamIdEx;
    __typeof__(cuptiActivityEnable) *Enable;
    __typeof__(cuptiActivityDisable) *Disable;
    __typeof__(cuptiActivityRegisterCallbacks) *RegisterCallbacks;
    __typeof__(cuptiActivityFlushAll) *FlushAll;
    __typeof__(cuptiActivityFlushPeriod) *FlushPeriod;
    __typeof__(cuptiActivityGetNextRecord) *GetNextRecord;
    __typeof__(cuptiActivityGetNumDroppedRecords) *GetNumDropped;
} cupti;
static struct {
    __typeof__(cuCtxGetCurrent) *CtxGetCurrent;
    __typeof__(cuCtxSynchronize) *CtxSynchronize;
    __typeof__(cuMemAlloc) *MemAlloc; /* cuMemAlloc_v2 */
    __typeof__(cuMemsetD32Async) *MemsetD32Async;
} drv;

static pthread_mutex_t emit_lock = PTHREAD_MUTEX_INITIALIZER;
static int out_fd = -1;              /* the judge's pipe; -1 until attached */
static uint32_t next_seq;            /* sequence number of the next record written */
static uint64_t dropped_total;       /* records CUPTI reported dropped */
static uint64_t discarded_total;     /* records produced before a descriptor was attached */
static int write_failed;             /* the pipe broke: nothing more can be said */
static int started;
static CUcontext marker_context;
static CUdeviceptr marker_word;      /* 4 bytes of device memory the markers write */

static uint64_t host_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t gpu_now(void) {
    uint64_t t = 0;
    if (cupti.GetTimestamp) cupti.GetTimestamp(&t);
    return t;
}

static void write_all(const uint8_t *data, size_t len) {
    while (len && !write_failed) {
        ssize_t n = write(out_fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            write_failed = 1;
            return;
        }
        data += n;
        len -= (size_t)n;
    }
}

/* Numbers the records in `data` (consecutive, whole records) and writes them as one batch. Sequence
 * numbers are assigned under the lock, at the moment of writing, so the judge sees them in order. */
static void emit_locked(uint8_t *data, size_t len, size_t count) {
    if (out_fd < 0) {
        discarded_total += count;
        return;
    }
    for (size_t off = 0; off + sizeof(rec_header) <= len;) {
        rec_header *h = (rec_header *)(data + off);
        h->seq = next_seq++;
        off += h->size;
    }
    write_all(data, len);
}

static void emit(uint8_t *data, size_t len, size_t count) {
    pthread_mutex_lock(&emit_lock);
    emit_locked(data, len, count);
    pthread_mutex_unlock(&emit_lock);
}

static void header(rec_header *h, uint16_t kind, size_t size) {
    h->magic = REC_MAGIC;
    h->kind = kind;
    h->size = (uint16_t)size;
    h->seq = 0;
}

static void emit_error(int code, const char *text) {
    uint8_t buf[sizeof(rec_error) + 256];
    size_t len = strnlen(text, 256);
    rec_error *r = (rec_error *)buf;
    header(&r->h, REC_ERROR, sizeof(rec_error) + len);
    r->code = code;
    r->text_len = (uint16_t)len;
    memcpy(buf + sizeof(rec_error), text, len);
    emit(buf, sizeof(rec_error) + len, 1);
}

/* ---- CUPTI's buffer callbacks ---- */
static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = aligned_alloc(8, CUPTI_BUFFER_BYTES);
    *size = *buffer ? CUPTI_BUFFER_BYTES : 0;
    *max_records = 0;
}

typedef struct { uint8_t *data; size_t len, cap, count; } batch;

static void *batch_add(batch *b, size_t size) {
    if (b->len + size > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap < b->len + size) cap *= 2;
        uint8_t *grown = realloc(b->data, cap);
        if (!grown) return NULL;
        b->data = grown;
        b->cap = cap;
    }
    void *at = b->data + b->len;
    memset(at, 0, size);
    b->len += size;
    b->count++;
    return at;
}

static void encode(batch *b, const CUpti_Activity *record) {
    switch (record->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)record;
        size_t name_len = k->name ? strnlen(k->name, MAX_NAME) : 0;
        rec_kernel *r = batch_add(b, sizeof(rec_kernel) + name_len);
        if (!r) return;
        header(&r->h, REC_KERNEL, sizeof(rec_kernel) + name_len);
        r->start = k->start;
        r->end = k->end;
        r->stream = k->streamId;
        r->correlation = k->correlationId;
        r->device = k->deviceId;
        r->context = k->contextId;
        r->grid[0] = k->gridX, r->grid[1] = k->gridY, r->grid[2] = k->gridZ;
        r->block[0] = k->blockX, r->block[1] = k->blockY, r->block[2] = k->blockZ;
        r->name_len = (uint16_t)name_len;
        if (name_len) memcpy((uint8_t *)r + sizeof(rec_kernel), k->name, name_len);
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const CUpti_ActivityMemcpy6 *m = (const CUpti_ActivityMemcpy6 *)record;
        rec_memcpy *r = batch_add(b, sizeof(rec_memcpy));
        if (!r) return;
        header(&r->h, REC_MEMCPY, sizeof(rec_memcpy));
        r->start = m->start;
        r->end = m->end;
        r->stream = m->streamId;
        r->correlation = m->correlationId;
        r->bytes = m->bytes;
        r->copy_kind = m->copyKind;
        r->src_kind = m->srcKind;
        r->dst_kind = m->dstKind;
        break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
        const CUpti_ActivityMemset4 *m = (const CUpti_ActivityMemset4 *)record;
        rec_memset *r = batch_add(b, sizeof(rec_memset));
        if (!r) return;
        header(&r->h, REC_MEMSET, sizeof(rec_memset));
        r->start = m->start;
        r->end = m->end;
        r->stream = m->streamId;
        r->correlation = m->correlationId;
        r->bytes = m->bytes;
        r->value = m->value;
        r->memory_kind = m->memoryKind;
        break;
    }
    default:
        break;
    }
}

static void CUPTIAPI buffer_completed(CUcontext context, uint32_t stream_id, uint8_t *buffer, size_t size, size_t valid) {
    (void)size;
    batch b = {0};
    CUpti_Activity *record = NULL;
    while (valid && cupti.GetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) encode(&b, record);
    size_t dropped = 0;
    if (cupti.GetNumDropped && cupti.GetNumDropped(context, stream_id, &dropped) == CUPTI_SUCCESS && dropped) {
        pthread_mutex_lock(&emit_lock);
        dropped_total += dropped;
        pthread_mutex_unlock(&emit_lock);
    }
    if (b.len) emit(b.data, b.len, b.count);
    free(b.data);
    free(buffer);
}

/* ---- the interface (ctypes) ---- */
static void *resolve(void *lib, const char *name, char *err, size_t errlen) {
    void *fn = dlsym(lib, name);
    if (!fn && err) snprintf(err, errlen, "symbol %s not found", name);
    return fn;
}

static const char *cupti_error(CUptiResult result) {
    const char *text = NULL;
    if (cupti.GetResultString) cupti.GetResultString(result, &text);
    return text ? text : "unknown CUPTI error";
}

/* Sets the descriptor and writes the HELLO record in one hold of the lock, so that HELLO is record 0
 * whatever CUPTI's thread delivers at the same moment. Returns -1 if a descriptor was already set. */
static int attach_with_hello(int fd) {
    rec_hello r;
    memset(&r, 0, sizeof r);
    header(&r.h, REC_HELLO, sizeof r);
    r.format = REC_FORMAT;
    cupti.GetVersion(&r.cupti_runtime);
    r.cupti_compiled = CUPTI_API_VERSION;
    r.pid = (uint32_t)getpid();
    r.host_ns = host_now();
    r.gpu_ns = gpu_now();
    pthread_mutex_lock(&emit_lock);
    int ok = out_fd < 0;
    if (ok) {
        out_fd = fd;
        r.discarded = discarded_total;
        emit_locked((uint8_t *)&r, sizeof r, 1);
    }
    pthread_mutex_unlock(&emit_lock);
    return ok ? 0 : -1;
}

/* Loads CUPTI and the driver from the given paths, registers the buffer callbacks and enables the
 * activity kinds. `fd` may be -1: records are then discarded (and counted) until `attach`.
 * Returns 0, or -1 with a reason in `err`. */
EXPORT int referee_recorder_start(const char *cupti_path, const char *cuda_path, int fd, char *err, size_t errlen) {
    if (started) {
        snprintf(err, errlen, "already started");
        return -1;
    }
    void *lib = dlopen(cupti_path, RTLD_NOW | RTLD_GLOBAL);
    if (!lib) {
        snprintf(err, errlen, "dlopen %s: %s", cupti_path, dlerror());
        return -1;
    }
    void *driver = dlopen(cuda_path, RTLD_NOW | RTLD_GLOBAL);
    if (!driver) {
        snprintf(err, errlen, "dlopen %s: %s", cuda_path, dlerror());
        return -1;
    }
#define NEED(lib, slot, name) if (!(*(void **)&(slot) = resolve(lib, name, err, errlen))) return -1
    NEED(lib, cupti.GetVersion, "cuptiGetVersion");
    NEED(lib, cupti.GetResultString, "cuptiGetResultString");
    NEED(lib, cupti.GetTimestamp, "cuptiGetTimestamp");
    NEED(lib, cupti.Enable, "cuptiActivityEnable");
    NEED(lib, cupti.Disable, "cuptiActivityDisable");
    NEED(lib, cupti.RegisterCallbacks, "cuptiActivityRegisterCallbacks");
    NEED(lib, cupti.FlushAll, "cuptiActivityFlushAll");
    NEED(lib, cupti.GetNextRecord, "cuptiActivityGetNextRecord");
    NEED(driver, drv.CtxGetCurrent, "cuCtxGetCurrent");
    NEED(driver, drv.CtxSynchronize, "cuCtxSynchronize");
    NEED(driver, drv.MemAlloc, "cuMemAlloc_v2");
    NEED(driver, drv.MemsetD32Async, "cuMemsetD32Async");
#undef NEED
    *(void **)&cupti.GetStreamIdEx = dlsym(lib, "cuptiGetStreamIdEx");
    *(void **)&cupti.FlushPeriod = dlsym(lib, "cuptiActivityFlushPeriod");
    *(void **)&cupti.GetNumDropped = dlsym(lib, "cuptiActivityGetNumDroppedRecords");
    uint32_t version = 0;
    CUptiResult result = cupti.GetVersion(&version);
    if (result != CUPTI_SUCCESS) {
        snprintf(err, errlen, "cuptiGetVersion: %s", cupti_error(result));
        return -1;
    }
    if (version != CUPTI_API_VERSION) {
        /* Activity records are laid out as in the headers this was built against. */
        snprintf(err, errlen, "CUPTI library reports API version %u, the headers are %u", version, (unsigned)CUPTI_API_VERSION);
        return -1;
    }
    result = cupti.RegisterCallbacks(buffer_requested, buffer_completed);
    if (result != CUPTI_SUCCESS) {
        snprintf(err, errlen, "cuptiActivityRegisterCallbacks: %s", cupti_error(result));
        return -1;
    }
    const CUpti_ActivityKind kinds[] = {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY, CUPTI_ACTIVITY_KIND_MEMSET};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        result = cupti.Enable(kinds[i]);
        if (result != CUPTI_SUCCESS) {
            snprintf(err, errlen, "cuptiActivityEnable(%d): %s", (int)kinds[i], cupti_error(result));
            for (size_t j = 0; j < i; j++) cupti.Disable(kinds[j]);
            return -1;
        }
    }
    if (cupti.FlushPeriod) cupti.FlushPeriod(FLUSH_PERIOD_MS); /* records leave the process as they complete */
    started = 1;
    if (fd >= 0) attach_with_hello(fd);
    return 0;
}

/* Gives a recorder started with fd -1 its descriptor (a warm-pool child learns it on assignment). */
EXPORT int referee_recorder_attach(int fd) {
    if (!started || fd < 0) return -1;
    return attach_with_hello(fd);
}

/* Writes a host-side MARK record, then enqueues a 4-byte memset of the recorder's own device word
 * with value `label` on `stream` (0: the legacy default stream), which CUPTI reports as a MEMSET
 * record carrying the value: the judge splits the GPU timeline at it. Returns the CUresult. */
EXPORT int referee_recorder_mark(uint32_t label, uint64_t stream) {
    if (!started) return -1;
    CUcontext context = NULL;
    CUresult status = drv.CtxGetCurrent(&context);
    if (status == CUDA_SUCCESS && !context) status = CUDA_ERROR_INVALID_CONTEXT;
    if (status == CUDA_SUCCESS && context != marker_context) {
        CUdeviceptr word = 0;
        status = drv.MemAlloc(&word, 4);
        if (status == CUDA_SUCCESS) marker_context = context, marker_word = word;
    }
    uint32_t stream_id = 0;
    if (status == CUDA_SUCCESS && cupti.GetStreamIdEx) cupti.GetStreamIdEx(context, (CUstream)(uintptr_t)stream, 0, &stream_id);
    rec_mark r;
    memset(&r, 0, sizeof r);
    header(&r.h, REC_MARK, sizeof r);
    r.label = label;
    r.stream = stream_id;
    r.host_ns = host_now();
    r.gpu_ns = gpu_now();
    if (status == CUDA_SUCCESS) status = drv.MemsetD32Async(marker_word, label, 1, (CUstream)(uintptr_t)stream);
    r.status = (int32_t)status;
    emit((uint8_t *)&r, sizeof r, 1);
    return (int)status;
}

/* Delivers every completed record (after a device synchronize when `synchronize` is set), then
 * writes a FLUSH record: everything the GPU finished before this call is in the stream before it. */
EXPORT int referee_recorder_flush(int synchronize) {
    if (!started) return -1;
    if (synchronize) {
        CUcontext context = NULL;
        if (drv.CtxGetCurrent(&context) == CUDA_SUCCESS && context) drv.CtxSynchronize();
    }
    CUptiResult result = cupti.FlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    if (result != CUPTI_SUCCESS) emit_error((int)result, cupti_error(result));
    rec_flush r;
    memset(&r, 0, sizeof r);
    header(&r.h, REC_FLUSH, sizeof r);
    r.host_ns = host_now();
    r.gpu_ns = gpu_now();
    pthread_mutex_lock(&emit_lock); /* one hold: no record can slip between the count and the FLUSH */
    r.written = next_seq;               /* the records before this one */
    r.dropped = dropped_total;
    emit_locked((uint8_t *)&r, sizeof r, 1);
    pthread_mutex_unlock(&emit_lock);
    return result == CUPTI_SUCCESS ? 0 : (int)result;
}

/* Stops recording (delivering what is left first). */
EXPORT int referee_recorder_stop(void) {
    if (!started) return -1;
    referee_recorder_flush(0);
    cupti.Disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cupti.Disable(CUPTI_ACTIVITY_KIND_MEMCPY);
    cupti.Disable(CUPTI_ACTIVITY_KIND_MEMSET);
    cupti.FlushAll(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);
    started = 0;
    return 0;
}

/* Whether writing to the descriptor failed (the judge closed it, or it was never a pipe). */
EXPORT int referee_recorder_broken(void) { return write_failed; }
