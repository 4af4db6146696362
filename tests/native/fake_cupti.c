/* A stand-in for CUPTI and the CUDA driver, for CPU tests of recorder.c only: this machine has no
 * GPU, so nothing real can produce activity records. It implements the few entry points the
 * recorder resolves, with CUPTI's real record layouts (the headers), and lets a test "run" kernels,
 * copies and memsets (fake_kernel, fake_memcpy; the recorder's markers arrive as cuMemsetD32Async).
 * Records are held until a flush, as CUPTI's buffers are, and delivered through the registered
 * buffer callbacks. Real CUPTI is exercised by tests/gpu/test_native_recorder.py.
 */
#include <cupti.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))
#define MAX_PENDING 4096

static CUpti_BuffersCallbackRequestFunc requested;
static CUpti_BuffersCallbackCompleteFunc completed;
static int enabled[64];
static uint32_t correlation = 100;
static uint64_t clock_ns = 1000000000ull; /* a GPU clock that only moves forward */
static size_t dropped;

typedef union {
    CUpti_Activity any;
    CUpti_ActivityKernel10 kernel;
    CUpti_ActivityMemcpy6 memcpy;
    CUpti_ActivityMemset4 memset;
} any_record;
static any_record pending[MAX_PENDING];
static char names[MAX_PENDING][128];
static size_t npending;
static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER; /* CUPTI and the driver are thread-safe */

static size_t record_size(const CUpti_Activity *r) {
    switch (r->kind) {
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: return sizeof(CUpti_ActivityKernel10);
    case CUPTI_ACTIVITY_KIND_MEMCPY: return sizeof(CUpti_ActivityMemcpy6);
    case CUPTI_ACTIVITY_KIND_MEMSET: return sizeof(CUpti_ActivityMemset4);
    default: return 0;
    }
}

static any_record *add(CUpti_ActivityKind kind) {
    if (!enabled[kind]) return NULL;
    if (npending == MAX_PENDING) {
        dropped++;
        return NULL;
    }
    any_record *r = &pending[npending++];
    memset(r, 0, sizeof *r);
    r->any.kind = kind;
    return r;
}

static uint64_t advance(uint64_t ns) { return clock_ns += ns; }

/* ---- CUPTI ---- */
EXPORT CUptiResult cuptiGetVersion(uint32_t *version) { *version = CUPTI_API_VERSION; return CUPTI_SUCCESS; }
EXPORT CUptiResult cuptiGetResultString(CUptiResult result, const char **text) {
    *text = result == CUPTI_SUCCESS ? "CUPTI_SUCCESS" : "fake CUPTI error";
    return CUPTI_SUCCESS;
}
EXPORT CUptiResult cuptiGetTimestamp(uint64_t *t) { *t = clock_ns; return CUPTI_SUCCESS; }
EXPORT CUptiResult cuptiGetStreamIdEx(CUcontext c, CUstream s, uint8_t per_thread, uint32_t *id) {
    (void)c, (void)per_thread;
    *id = (uint32_t)(uintptr_t)s + 7;
    return CUPTI_SUCCESS;
}
EXPORT CUptiResult cuptiActivityEnable(CUpti_ActivityKind kind) { enabled[kind] = 1; return CUPTI_SUCCESS; }
EXPORT CUptiResult cuptiActivityDisable(CUpti_ActivityKind kind) { enabled[kind] = 0; return CUPTI_SUCCESS; }
EXPORT CUptiResult cuptiActivityRegisterCallbacks(CUpti_BuffersCallbackRequestFunc r, CUpti_BuffersCallbackCompleteFunc c) {
    requested = r, completed = c;
    return CUPTI_SUCCESS;
}
EXPORT CUptiResult cuptiActivityFlushPeriod(uint32_t ms) { (void)ms; return CUPTI_SUCCESS; }
EXPORT CUptiResult cuptiActivityGetNumDroppedRecords(CUcontext c, uint32_t s, size_t *n) {
    (void)c, (void)s;
    *n = dropped;
    dropped = 0;
    return CUPTI_SUCCESS;
}
EXPORT CUptiResult cuptiActivityGetNextRecord(uint8_t *buffer, size_t valid, CUpti_Activity **record) {
    uint8_t *at = *record ? (uint8_t *)*record + record_size(*record) : buffer;
    if (at >= buffer + valid) return CUPTI_ERROR_MAX_LIMIT_REACHED;
    *record = (CUpti_Activity *)at;
    return CUPTI_SUCCESS;
}
EXPORT CUptiResult cuptiActivityFlushAll(uint32_t flag) {
    (void)flag;
    pthread_mutex_lock(&fake_lock);
    if (!requested || !completed || !npending) {
        pthread_mutex_unlock(&fake_lock);
        return CUPTI_SUCCESS;
    }
    uint8_t *buffer = NULL;
    size_t size = 0, max_records = 0;
    requested(&buffer, &size, &max_records);
    size_t used = 0;
    for (size_t i = 0; i < npending; i++) {
        size_t n = record_size(&pending[i].any);
        if (used + n > size) break;
        memcpy(buffer + used, &pending[i], n);
        used += n;
    }
    npending = 0;
    pthread_mutex_unlock(&fake_lock); /* CUPTI calls back outside its own locks */
    completed(NULL, 0, buffer, size, used);
    return CUPTI_SUCCESS;
}

/* ---- the driver ---- */
EXPORT CUresult cuCtxGetCurrent(CUcontext *context) { *context = (CUcontext)(uintptr_t)0x1000; return CUDA_SUCCESS; }
EXPORT CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }
EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *ptr, size_t bytes) { (void)bytes; *ptr = 0x7000; return CUDA_SUCCESS; }
EXPORT CUresult cuMemsetD32Async(CUdeviceptr ptr, unsigned int value, size_t n, CUstream stream) {
    (void)ptr;
    pthread_mutex_lock(&fake_lock);
    any_record *r = add(CUPTI_ACTIVITY_KIND_MEMSET);
    if (r) {
        r->memset.value = value;
        r->memset.bytes = 4 * n;
        r->memset.start = advance(500);
        r->memset.end = advance(1000);
        r->memset.streamId = (uint32_t)(uintptr_t)stream + 7;
        r->memset.correlationId = correlation++;
    } else {
        advance(1500);
    }
    pthread_mutex_unlock(&fake_lock);
    return CUDA_SUCCESS;
}

/* ---- what a test drives ---- */
EXPORT void fake_kernel(const char *name, uint64_t duration_ns, uint64_t stream) {
    any_record *r = add(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    if (!r) {
        advance(duration_ns + 200);
        return;
    }
    size_t slot = (size_t)(r - pending);
    strncpy(names[slot], name, sizeof names[slot] - 1);
    r->kernel.name = names[slot];
    r->kernel.start = advance(200);
    r->kernel.end = advance(duration_ns);
    r->kernel.streamId = (uint32_t)stream + 7;
    r->kernel.correlationId = correlation++;
    r->kernel.gridX = 4, r->kernel.gridY = 1, r->kernel.gridZ = 1;
    r->kernel.blockX = 128, r->kernel.blockY = 1, r->kernel.blockZ = 1;
}

EXPORT void fake_memcpy(uint64_t bytes, uint8_t copy_kind, uint64_t duration_ns, uint64_t stream) {
    any_record *r = add(CUPTI_ACTIVITY_KIND_MEMCPY);
    if (!r) {
        advance(duration_ns + 200);
        return;
    }
    r->memcpy.bytes = bytes;
    r->memcpy.copyKind = copy_kind;
    r->memcpy.start = advance(200);
    r->memcpy.end = advance(duration_ns);
    r->memcpy.streamId = (uint32_t)stream + 7;
    r->memcpy.correlationId = correlation++;
}

EXPORT void fake_drop(size_t n) { dropped += n; }
