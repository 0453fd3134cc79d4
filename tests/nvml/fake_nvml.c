/*
 * A fake NVML library for gridshift's tests: a drop-in libnvidia-ml.so.1 that the
 * unmodified pynvml binding loads, so the real binding code runs without a GPU.
 *
 * The devices live in a key=value state file named by FAKE_NVML_STATE. The file is
 * re-read whenever it changes (inode, size or mtime), so a test can change loads, inject
 * errors or move the fake's clock between calls. nvmlDeviceSetPowerManagementLimit writes
 * the new limit back to the file atomically (tmp + rename), so a restarted process (and
 * the test) sees what an earlier one set, as on a real GPU.
 *
 * Keys (N is the device index):
 *   device_count=2            clock_s=<unix s>  (optional: freeze the fake's clock)
 *   init_rc=<nvmlReturn_t>    (optional: make nvmlInit fail)
 *   driver_version=550.54.15
 *   gpuN.name, gpuN.uuid, gpuN.demand_mw (what the load draws uncapped),
 *   gpuN.ripple_mw, gpuN.ripple_period_s (a sine on top of the load),
 *   gpuN.power_limit_mw, gpuN.default_limit_mw, gpuN.min_limit_mw, gpuN.max_limit_mw,
 *   gpuN.energy_mj, gpuN.energy_ts (counter value at that unix time; it grows at the
 *   current power), gpuN.util_gpu, gpuN.util_mem, gpuN.mem_total, gpuN.mem_used,
 *   gpuN.temp_c, gpuN.mig (0/1), gpuN.procs=pid:bytes,pid:bytes
 *   gpuN.power_usage=average|instant (what nvmlDeviceGetPowerUsage returns: the 1 s
 *   average of Hopper and newer, or the instant reading of A100 and older)
 * Error injection:
 *   gpuN.lost=1 (every call on the device: GPU_IS_LOST), gpuN.set_limit_rc=4 (e.g.
 *   NO_PERMISSION), gpuN.energy_supported=0, gpuN.fields_supported=0 (NOT_SUPPORTED).
 * No state file: nvmlInit answers DRIVER_NOT_LOADED, as on a host without a driver.
 *
 * Power model: base = min(demand, limit); instant(t) = base + ripple * sin(2 pi t / T).
 * The energy counter is the exact integral of instant power (closed form).
 *
 * Every entry point holds one mutex, so the library is thread-safe.
 * fakeNvmlCallCount(name) reports how often an entry point was called and fakeNvmlReset()
 * forgets every nvmlInit (test hooks, not part of NVML).
 *
 * Build: gcc -shared -fPIC -O2 -Wall -Wl,-soname,libnvidia-ml.so.1 \
 *            -o libnvidia-ml.so.1 fake_nvml.c -lpthread -lm
 * Prototype check against NVIDIA's header (pip install nvidia-nvml-dev; never commit it):
 *   gcc -fsyntax-only -DFAKE_NVML_REAL_HEADER -I<site-packages>/nvidia/cuNN/include fake_nvml.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef FAKE_NVML_REAL_HEADER
#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include <nvml.h>
#else
typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;
typedef int nvmlEnableState_t;
typedef int nvmlTemperatureSensors_t;
typedef int nvmlComputeMode_t;
typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;
typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;
typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    signed long long sllVal;
    signed int siVal;
    unsigned short usVal;
} nvmlValue_t;
typedef int nvmlValueType_t;
typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    nvmlValueType_t valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;
#endif

#define EXPORT __attribute__((visibility("default")))

enum {
    RC_SUCCESS = 0,
    RC_UNINITIALIZED = 1,
    RC_INVALID_ARGUMENT = 2,
    RC_NOT_SUPPORTED = 3,
    RC_NO_PERMISSION = 4,
    RC_NOT_FOUND = 6,
    RC_INSUFFICIENT_SIZE = 7,
    RC_DRIVER_NOT_LOADED = 9,
    RC_GPU_IS_LOST = 15,
    RC_UNKNOWN = 999,
};

enum {
    FI_POWER_AVERAGE = 185,
    FI_POWER_INSTANT = 186,
    FI_POWER_MIN_LIMIT = 187,
    FI_POWER_MAX_LIMIT = 188,
    FI_POWER_DEFAULT_LIMIT = 189,
    FI_POWER_CURRENT_LIMIT = 190,
    FI_ENERGY = 191,
};

#define MAX_DEVICES 64
#define MAX_PROCS 32
#define MAX_KEYS 2048
#define KEY_LEN 64
#define VAL_LEN 512

struct nvmlDevice_st {
    char name[96];
    char uuid[96];
    double demand_mw, ripple_mw, ripple_period_s;
    double power_limit_mw, default_limit_mw, min_limit_mw, max_limit_mw;
    double energy_mj, energy_ts;
    int has_energy_ts;
    unsigned int util_gpu, util_mem, temp_c, mig;
    unsigned long long mem_total, mem_used;
    unsigned int nprocs;
    unsigned int proc_pid[MAX_PROCS];
    unsigned long long proc_mem[MAX_PROCS];
    int power_usage_instant;
    int lost, set_limit_rc, energy_supported, fields_supported;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct nvmlDevice_st g_dev[MAX_DEVICES];
static unsigned int g_count;
static int g_init_refs;
static int g_init_rc;
static int g_has_clock;
static double g_clock_s;
static char g_driver[80];
static char g_keys[MAX_KEYS][KEY_LEN];
static char g_vals[MAX_KEYS][VAL_LEN];
static int g_nkeys;
static struct stat g_seen;
static char g_seen_path[4096];
static int g_loaded;

/* ---- call counters ------------------------------------------------------------------- */

#define MAX_COUNTERS 64
static const char *g_counter_name[MAX_COUNTERS];
static unsigned long long g_counter[MAX_COUNTERS];

static void count_call(const char *name) {
    for (int i = 0; i < MAX_COUNTERS; i++) {
        if (g_counter_name[i] == NULL) {
            g_counter_name[i] = name;
            g_counter[i] = 1;
            return;
        }
        if (strcmp(g_counter_name[i], name) == 0) {
            g_counter[i]++;
            return;
        }
    }
}

EXPORT unsigned long long fakeNvmlCallCount(const char *name) {
    unsigned long long n = 0;
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < MAX_COUNTERS && g_counter_name[i]; i++)
        if (strcmp(g_counter_name[i], name) == 0) n = g_counter[i];
    pthread_mutex_unlock(&g_lock);
    return n;
}

/* Test hook: forget every nvmlInit (as a fresh process would). */
EXPORT void fakeNvmlReset(void) {
    pthread_mutex_lock(&g_lock);
    g_init_refs = 0;
    g_loaded = 0;
    pthread_mutex_unlock(&g_lock);
}

/* ---- state file ---------------------------------------------------------------------- */

static const char *state_path(void) {
    const char *p = getenv("FAKE_NVML_STATE");
    return (p && *p) ? p : NULL;
}

static double now_s(void) {
    if (g_has_clock) return g_clock_s;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char *get(const char *key) {
    for (int i = 0; i < g_nkeys; i++)
        if (strcmp(g_keys[i], key) == 0) return g_vals[i];
    return NULL;
}

static const char *dget(unsigned int idx, const char *field) {
    char key[KEY_LEN];
    snprintf(key, sizeof key, "gpu%u.%s", idx, field);
    return get(key);
}

static double dnum(unsigned int idx, const char *field, double fallback) {
    const char *v = dget(idx, field);
    return v ? strtod(v, NULL) : fallback;
}

static void set_kv(const char *key, const char *val) {
    for (int i = 0; i < g_nkeys; i++) {
        if (strcmp(g_keys[i], key) == 0) {
            snprintf(g_vals[i], VAL_LEN, "%s", val);
            return;
        }
    }
    if (g_nkeys < MAX_KEYS) {
        snprintf(g_keys[g_nkeys], KEY_LEN, "%s", key);
        snprintf(g_vals[g_nkeys], VAL_LEN, "%s", val);
        g_nkeys++;
    }
}

static void parse_procs(struct nvmlDevice_st *d, const char *text) {
    d->nprocs = 0;
    if (!text) return;
    const char *p = text;
    while (*p && d->nprocs < MAX_PROCS) {
        char *end;
        unsigned long pid = strtoul(p, &end, 10);
        if (end == p) break;
        unsigned long long mem = 0;
        if (*end == ':') mem = strtoull(end + 1, &end, 10);
        d->proc_pid[d->nprocs] = (unsigned int)pid;
        d->proc_mem[d->nprocs] = mem;
        d->nprocs++;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
}

static void build_devices(void) {
    const char *v = get("device_count");
    g_count = v ? (unsigned int)strtoul(v, NULL, 10) : 0;
    if (g_count > MAX_DEVICES) g_count = MAX_DEVICES;
    v = get("clock_s");
    g_has_clock = v != NULL;
    g_clock_s = v ? strtod(v, NULL) : 0.0;
    v = get("init_rc");
    g_init_rc = v ? atoi(v) : 0;
    v = get("driver_version");
    snprintf(g_driver, sizeof g_driver, "%s", v ? v : "550.54.15");
    for (unsigned int i = 0; i < g_count; i++) {
        struct nvmlDevice_st *d = &g_dev[i];
        memset(d, 0, sizeof *d);
        v = dget(i, "name");
        snprintf(d->name, sizeof d->name, "%s", v ? v : "NVIDIA H100 80GB HBM3");
        v = dget(i, "uuid");
        if (v)
            snprintf(d->uuid, sizeof d->uuid, "%s", v);
        else
            snprintf(d->uuid, sizeof d->uuid, "GPU-00000000-0000-0000-0000-%012u", i);
        d->max_limit_mw = dnum(i, "max_limit_mw", 700000);
        d->min_limit_mw = dnum(i, "min_limit_mw", 200000);
        d->default_limit_mw = dnum(i, "default_limit_mw", d->max_limit_mw);
        d->power_limit_mw = dnum(i, "power_limit_mw", d->default_limit_mw);
        d->demand_mw = dnum(i, "demand_mw", 300000);
        d->ripple_mw = dnum(i, "ripple_mw", 0);
        d->ripple_period_s = dnum(i, "ripple_period_s", 10);
        if (d->ripple_period_s <= 0) d->ripple_period_s = 10;
        d->energy_mj = dnum(i, "energy_mj", 0);
        d->has_energy_ts = dget(i, "energy_ts") != NULL;
        d->energy_ts = dnum(i, "energy_ts", 0);
        d->util_gpu = (unsigned int)dnum(i, "util_gpu", 0);
        d->util_mem = (unsigned int)dnum(i, "util_mem", 0);
        d->temp_c = (unsigned int)dnum(i, "temp_c", 40);
        d->mig = (unsigned int)dnum(i, "mig", 0);
        d->mem_total = (unsigned long long)dnum(i, "mem_total", 85899345920.0);
        d->mem_used = (unsigned long long)dnum(i, "mem_used", 0);
        parse_procs(d, dget(i, "procs"));
        v = dget(i, "power_usage");
        d->power_usage_instant = v && strcmp(v, "instant") == 0;
        d->lost = (int)dnum(i, "lost", 0);
        d->set_limit_rc = (int)dnum(i, "set_limit_rc", 0);
        d->energy_supported = (int)dnum(i, "energy_supported", 1);
        d->fields_supported = (int)dnum(i, "fields_supported", 1);
    }
}

/* Re-read the file if it changed. Returns 0 when there is no readable state. */
static int refresh(void) {
    const char *path = state_path();
    if (!path) return 0;
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (g_loaded && strcmp(path, g_seen_path) == 0 && st.st_ino == g_seen.st_ino && st.st_size == g_seen.st_size &&
        st.st_mtim.tv_sec == g_seen.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == g_seen.st_mtim.tv_nsec)
        return 1;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    g_nkeys = 0;
    char line[KEY_LEN + VAL_LEN + 8];
    while (fgets(line, sizeof line, f) && g_nkeys < MAX_KEYS) {
        char *nl = strpbrk(line, "\r\n");
        if (nl) *nl = 0;
        if (line[0] == '#' || line[0] == 0) continue;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        snprintf(g_keys[g_nkeys], KEY_LEN, "%.*s", KEY_LEN - 1, line);
        snprintf(g_vals[g_nkeys], VAL_LEN, "%s", eq + 1);
        g_nkeys++;
    }
    fclose(f);
    g_seen = st;
    snprintf(g_seen_path, sizeof g_seen_path, "%s", path);
    g_loaded = 1;
    build_devices();
    return 1;
}

static int write_state(void) {
    const char *path = state_path();
    if (!path) return -1;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.fake-nvml.%d.tmp", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    for (int i = 0; i < g_nkeys; i++) fprintf(f, "%s=%s\n", g_keys[i], g_vals[i]);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        unlink(tmp);
        return -1;
    }
    fclose(f);
    if (rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    g_loaded = 0; /* force a re-read */
    return refresh() ? 0 : -1;
}

/* ---- power model --------------------------------------------------------------------- */

static double base_mw(const struct nvmlDevice_st *d) {
    return d->demand_mw < d->power_limit_mw ? d->demand_mw : d->power_limit_mw;
}

static double instant_mw(const struct nvmlDevice_st *d, double t) {
    double p = base_mw(d) + d->ripple_mw * sin(2 * M_PI * t / d->ripple_period_s);
    return p > 0 ? p : 0;
}

static double energy_at(const struct nvmlDevice_st *d, double t) {
    if (!d->has_energy_ts) return d->energy_mj;
    double t0 = d->energy_ts, w = 2 * M_PI / d->ripple_period_s;
    double e = d->energy_mj + base_mw(d) * (t - t0);
    if (d->ripple_mw != 0) e += d->ripple_mw / w * (cos(w * t0) - cos(w * t));
    return e;
}

static double average_mw(const struct nvmlDevice_st *d, double t) {
    if (!d->has_energy_ts) return instant_mw(d, t);
    return energy_at(d, t) - energy_at(d, t - 1.0); /* mJ over 1 s = mW */
}

/* ---- helpers ------------------------------------------------------------------------- */

#define ENTER(fname)                          \
    pthread_mutex_lock(&g_lock);              \
    count_call(fname);                        \
    nvmlReturn_t rc_ = RC_SUCCESS;            \
    if (g_init_refs <= 0) {                   \
        rc_ = RC_UNINITIALIZED;               \
        goto out;                             \
    }                                         \
    if (!refresh()) {                         \
        rc_ = RC_DRIVER_NOT_LOADED;           \
        goto out;                             \
    }

#define LEAVE            \
    out:                 \
    pthread_mutex_unlock(&g_lock); \
    return rc_;

#define FAIL(code)   \
    do {             \
        rc_ = (code); \
        goto out;    \
    } while (0)

static struct nvmlDevice_st *dev_of(nvmlDevice_t h, nvmlReturn_t *rc) {
    struct nvmlDevice_st *d = (struct nvmlDevice_st *)h;
    if (d < g_dev || d >= g_dev + g_count) {
        *rc = RC_INVALID_ARGUMENT;
        return NULL;
    }
    if (d->lost) {
        *rc = RC_GPU_IS_LOST;
        return NULL;
    }
    *rc = RC_SUCCESS;
    return d;
}

#define DEVICE(h)                             \
    struct nvmlDevice_st *d = dev_of(h, &rc_); \
    if (!d) goto out;

static void copy_str(char *dst, unsigned int len, const char *src, nvmlReturn_t *rc) {
    if (strlen(src) + 1 > len) {
        *rc = RC_INSUFFICIENT_SIZE;
        return;
    }
    memcpy(dst, src, strlen(src) + 1);
}

/* ---- init ---------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    pthread_mutex_lock(&g_lock);
    count_call("nvmlInitWithFlags");
    nvmlReturn_t rc_ = RC_SUCCESS;
    g_loaded = 0;
    if (!refresh()) FAIL(RC_DRIVER_NOT_LOADED);
    if (g_init_rc) FAIL(g_init_rc);
    g_init_refs++;
    LEAVE
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
EXPORT nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

EXPORT nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&g_lock);
    count_call("nvmlShutdown");
    nvmlReturn_t rc_ = RC_SUCCESS;
    if (g_init_refs <= 0) FAIL(RC_UNINITIALIZED);
    g_init_refs--;
    LEAVE
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch ((int)result) {
    case RC_SUCCESS: return "Success";
    case RC_UNINITIALIZED: return "Uninitialized";
    case RC_INVALID_ARGUMENT: return "Invalid Argument";
    case RC_NOT_SUPPORTED: return "Not Supported";
    case RC_NO_PERMISSION: return "Insufficient Permissions";
    case RC_NOT_FOUND: return "Not Found";
    case RC_INSUFFICIENT_SIZE: return "Insufficient Size";
    case RC_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case RC_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetDriverVersion")
    copy_str(version, length, g_driver, &rc_);
    LEAVE
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetNVMLVersion")
    char buf[96];
    snprintf(buf, sizeof buf, "12.%s", g_driver);
    copy_str(version, length, buf, &rc_);
    LEAVE
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    ENTER("nvmlSystemGetCudaDriverVersion")
    if (!v) FAIL(RC_INVALID_ARGUMENT);
    *v = 12040;
    LEAVE
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) {
    return nvmlSystemGetCudaDriverVersion(v);
}

/* ---- devices ------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER("nvmlDeviceGetCount_v2")
    if (!count) FAIL(RC_INVALID_ARGUMENT);
    *count = g_count;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) {
    return nvmlDeviceGetCount_v2(count);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByIndex_v2")
    if (!device || index >= g_count) FAIL(RC_INVALID_ARGUMENT);
    *device = (nvmlDevice_t)&g_dev[index];
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByUUID")
    if (!uuid || !device) FAIL(RC_INVALID_ARGUMENT);
    rc_ = RC_NOT_FOUND;
    for (unsigned int i = 0; i < g_count; i++) {
        if (strcmp(g_dev[i].uuid, uuid) == 0) {
            *device = (nvmlDevice_t)&g_dev[i];
            rc_ = RC_SUCCESS;
        }
    }
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    ENTER("nvmlDeviceGetIndex")
    DEVICE(device)
    if (!index) FAIL(RC_INVALID_ARGUMENT);
    *index = (unsigned int)(d - g_dev);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER("nvmlDeviceGetName")
    DEVICE(device)
    copy_str(name, length, d->name, &rc_);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER("nvmlDeviceGetUUID")
    DEVICE(device)
    copy_str(uuid, length, d->uuid, &rc_);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                         unsigned int *pending) {
    ENTER("nvmlDeviceGetMigMode")
    DEVICE(device)
    if (!current || !pending) FAIL(RC_INVALID_ARGUMENT);
    *current = d->mig;
    *pending = d->mig;
    LEAVE
}

/* ---- power and energy ---------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    ENTER("nvmlDeviceGetPowerUsage")
    DEVICE(device)
    if (!power) FAIL(RC_INVALID_ARGUMENT);
    double t = now_s();
    *power = (unsigned int)llround(d->power_usage_instant ? instant_mw(d, t) : average_mw(d, t));
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                        unsigned long long *energy) {
    ENTER("nvmlDeviceGetTotalEnergyConsumption")
    DEVICE(device)
    if (!energy) FAIL(RC_INVALID_ARGUMENT);
    if (!d->energy_supported) FAIL(RC_NOT_SUPPORTED);
    double e = energy_at(d, now_s());
    *energy = e > 0 ? (unsigned long long)e : 0ULL;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount,
                                             nvmlFieldValue_t *values) {
    ENTER("nvmlDeviceGetFieldValues")
    DEVICE(device)
    if (valuesCount < 0 || (valuesCount > 0 && !values)) FAIL(RC_INVALID_ARGUMENT);
    double t = now_s();
    for (int i = 0; i < valuesCount; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = (long long)(t * 1e6);
        v->latencyUsec = 0;
        v->valueType = 1; /* NVML_VALUE_TYPE_UNSIGNED_INT */
        v->nvmlReturn = RC_SUCCESS;
        double mw = -1;
        if (!d->fields_supported) {
            v->nvmlReturn = RC_NOT_SUPPORTED;
            v->value.ullVal = 0;
            continue;
        }
        switch (v->fieldId) {
        case FI_POWER_INSTANT: mw = instant_mw(d, t); break;
        case FI_POWER_AVERAGE: mw = average_mw(d, t); break;
        case FI_POWER_MIN_LIMIT: mw = d->min_limit_mw; break;
        case FI_POWER_MAX_LIMIT: mw = d->max_limit_mw; break;
        case FI_POWER_DEFAULT_LIMIT: mw = d->default_limit_mw; break;
        case FI_POWER_CURRENT_LIMIT: mw = d->power_limit_mw; break;
        case FI_ENERGY:
            if (d->energy_supported) {
                v->valueType = 3; /* NVML_VALUE_TYPE_UNSIGNED_LONG_LONG */
                double e = energy_at(d, t);
                v->value.ullVal = e > 0 ? (unsigned long long)e : 0ULL;
                continue;
            }
            break;
        default: break;
        }
        if (mw < 0) {
            v->nvmlReturn = RC_NOT_SUPPORTED;
            v->value.ullVal = 0;
        } else {
            v->value.uiVal = (unsigned int)llround(mw);
        }
    }
    LEAVE
}

/* ---- limits -------------------------------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    ENTER("nvmlDeviceGetPowerManagementLimit")
    DEVICE(device)
    if (!limit) FAIL(RC_INVALID_ARGUMENT);
    *limit = (unsigned int)llround(d->power_limit_mw);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    ENTER("nvmlDeviceGetEnforcedPowerLimit")
    DEVICE(device)
    if (!limit) FAIL(RC_INVALID_ARGUMENT);
    *limit = (unsigned int)llround(d->power_limit_mw);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device,
                                                             unsigned int *limit) {
    ENTER("nvmlDeviceGetPowerManagementDefaultLimit")
    DEVICE(device)
    if (!limit) FAIL(RC_INVALID_ARGUMENT);
    *limit = (unsigned int)llround(d->default_limit_mw);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device,
                                                                 unsigned int *minLimit,
                                                                 unsigned int *maxLimit) {
    ENTER("nvmlDeviceGetPowerManagementLimitConstraints")
    DEVICE(device)
    if (!minLimit || !maxLimit) FAIL(RC_INVALID_ARGUMENT);
    *minLimit = (unsigned int)llround(d->min_limit_mw);
    *maxLimit = (unsigned int)llround(d->max_limit_mw);
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceSetPowerManagementLimit(nvmlDevice_t device, unsigned int limit) {
    ENTER("nvmlDeviceSetPowerManagementLimit")
    DEVICE(device)
    if (d->set_limit_rc) FAIL(d->set_limit_rc);
    if (limit < d->min_limit_mw || limit > d->max_limit_mw) FAIL(RC_INVALID_ARGUMENT);
    unsigned int idx = (unsigned int)(d - g_dev);
    double t = now_s();
    char key[KEY_LEN], val[VAL_LEN];
    /* Rebase the energy counter at the change so it stays continuous. */
    snprintf(key, sizeof key, "gpu%u.energy_mj", idx);
    snprintf(val, sizeof val, "%.3f", energy_at(d, t));
    set_kv(key, val);
    if (d->has_energy_ts) {
        snprintf(key, sizeof key, "gpu%u.energy_ts", idx);
        snprintf(val, sizeof val, "%.6f", t);
        set_kv(key, val);
    }
    snprintf(key, sizeof key, "gpu%u.power_limit_mw", idx);
    snprintf(val, sizeof val, "%u", limit);
    set_kv(key, val);
    if (write_state() != 0) FAIL(RC_UNKNOWN);
    LEAVE
}

/* ---- utilisation, memory, processes -------------------------------------------------- */

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    ENTER("nvmlDeviceGetUtilizationRates")
    DEVICE(device)
    if (!util) FAIL(RC_INVALID_ARGUMENT);
    util->gpu = d->util_gpu;
    util->memory = d->util_mem;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ENTER("nvmlDeviceGetMemoryInfo")
    DEVICE(device)
    if (!memory) FAIL(RC_INVALID_ARGUMENT);
    memory->total = d->mem_total;
    memory->used = d->mem_used;
    memory->free = d->mem_total > d->mem_used ? d->mem_total - d->mem_used : 0;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device,
                                             nvmlTemperatureSensors_t sensorType,
                                             unsigned int *temp) {
    ENTER("nvmlDeviceGetTemperature")
    DEVICE(device)
    (void)sensorType;
    if (!temp) FAIL(RC_INVALID_ARGUMENT);
    *temp = d->temp_c;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, nvmlComputeMode_t *mode) {
    ENTER("nvmlDeviceGetComputeMode")
    DEVICE(device)
    if (!mode) FAIL(RC_INVALID_ARGUMENT);
    *mode = 0; /* NVML_COMPUTEMODE_DEFAULT */
    LEAVE
}

static nvmlReturn_t list_procs(const char *fname, nvmlDevice_t device, unsigned int *count,
                               nvmlProcessInfo_t *infos, int graphics) {
    ENTER(fname)
    DEVICE(device)
    if (!count) FAIL(RC_INVALID_ARGUMENT);
    unsigned int n = graphics ? 0 : d->nprocs;
    if (*count < n || (n > 0 && !infos)) {
        *count = n;
        FAIL(RC_INSUFFICIENT_SIZE);
    }
    for (unsigned int i = 0; i < n; i++) {
        infos[i].pid = d->proc_pid[i];
        infos[i].usedGpuMemory = d->proc_mem[i];
        infos[i].gpuInstanceId = 0xFFFFFFFFu;
        infos[i].computeInstanceId = 0xFFFFFFFFu;
    }
    *count = n;
    LEAVE
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device,
                                                            unsigned int *infoCount,
                                                            nvmlProcessInfo_t *infos) {
    return list_procs("nvmlDeviceGetComputeRunningProcesses_v3", device, infoCount, infos, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device,
                                                             unsigned int *infoCount,
                                                             nvmlProcessInfo_t *infos) {
    return list_procs("nvmlDeviceGetGraphicsRunningProcesses_v3", device, infoCount, infos, 1);
}
