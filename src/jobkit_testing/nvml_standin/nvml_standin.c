/* A stand-in libnvidia-ml.so.1 for tests on machines without an NVIDIA GPU.
 *
 * It exports the NVML functions jobkit's sampler reaches through pynvml
 * (nvidia-ml-py) with the same signatures and struct layouts, and answers
 * with recorded values read from the file named by $JOBKIT_NVML_STANDIN,
 * one device per line, fields separated by tabs:
 *
 *     name  uuid  total_bytes  used_bytes  power_mW (-1: not supported)
 *           process_bytes (0: no compute process)  util,util,...
 *
 * Each nvmlDeviceGetUtilizationRates call answers the next value of the
 * device's sequence (the last one repeats).  A device with process_bytes > 0
 * reports one compute process: the calling process, using that much memory,
 * so the caller's own pid is what the sampler must match.  No file, or an
 * unreadable one: nvmlInit fails with NVML_ERROR_DRIVER_NOT_LOADED, as on a
 * machine whose driver is not loaded.
 *
 * Built by the test fixture: gcc -shared -fPIC -o libnvidia-ml.so.1 nvml_standin.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_NOT_FOUND 6

#define MAX_DEVICES 16
#define MAX_UTILS 256

typedef struct {
    char name[96];
    char uuid[96];
    unsigned long long total, used, process_bytes;
    long power_mw;
    unsigned int utils[MAX_UTILS];
    int n_utils, next_util;
} device_t;

typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

static device_t devices[MAX_DEVICES];
static int n_devices = -1;

static int load(void) {
    const char *path = getenv("JOBKIT_NVML_STANDIN");
    FILE *f = path ? fopen(path, "r") : NULL;
    char line[4096];
    if (f == NULL) return 0;
    n_devices = 0;
    while (n_devices < MAX_DEVICES && fgets(line, sizeof line, f)) {
        device_t *d = &devices[n_devices];
        char utils[3000];
        memset(d, 0, sizeof *d);
        if (sscanf(line, "%95[^\t]\t%95[^\t]\t%llu\t%llu\t%ld\t%llu\t%2999[^\n]", d->name, d->uuid,
                   &d->total, &d->used, &d->power_mw, &d->process_bytes, utils) != 7)
            continue;
        for (char *tok = strtok(utils, ","); tok && d->n_utils < MAX_UTILS; tok = strtok(NULL, ","))
            d->utils[d->n_utils++] = (unsigned int)strtoul(tok, NULL, 10);
        n_devices++;
    }
    fclose(f);
    return 1;
}

static device_t *dev(void *handle) {
    device_t *d = (device_t *)handle;
    return (n_devices > 0 && d >= devices && d < devices + n_devices) ? d : NULL;
}

static nvmlReturn_t copy(const char *text, char *out, unsigned int length) {
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, text);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return load() ? NVML_SUCCESS : NVML_ERROR_DRIVER_NOT_LOADED;
}
nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlShutdown(void) { return NVML_SUCCESS; }

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (n_devices < 0) return NVML_ERROR_UNINITIALIZED;
    *count = (unsigned int)n_devices;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    if (n_devices < 0) return NVML_ERROR_UNINITIALIZED;
    if (index >= (unsigned int)n_devices) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, void **device) {
    for (int i = 0; i < n_devices; i++)
        if (strcmp(devices[i].uuid, uuid) == 0) {
            *device = &devices[i];
            return NVML_SUCCESS;
        }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetIndex(void *device, unsigned int *index) {
    device_t *d = dev(device);
    if (d == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *index = (unsigned int)(d - devices);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    device_t *d = dev(device);
    return d ? copy(d->name, name, length) : NVML_ERROR_INVALID_ARGUMENT;
}

nvmlReturn_t nvmlDeviceGetUUID(void *device, char *uuid, unsigned int length) {
    device_t *d = dev(device);
    return d ? copy(d->uuid, uuid, length) : NVML_ERROR_INVALID_ARGUMENT;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(void *device, nvmlUtilization_t *utilization) {
    device_t *d = dev(device);
    if (d == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    utilization->gpu = d->n_utils ? d->utils[d->next_util] : 0;
    utilization->memory = 0;
    if (d->next_util + 1 < d->n_utils) d->next_util++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(void *device, nvmlMemory_t *memory) {
    device_t *d = dev(device);
    if (d == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    memory->total = d->total;
    memory->used = d->used;
    memory->free = d->total - d->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(void *device, unsigned int *power) {
    device_t *d = dev(device);
    if (d == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->power_mw < 0) return NVML_ERROR_NOT_SUPPORTED;
    *power = (unsigned int)d->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    device_t *d = dev(device);
    if (d == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int wanted = d->process_bytes ? 1 : 0;
    if (*count < wanted || (wanted && infos == NULL)) {
        *count = wanted;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = wanted;
    if (wanted) {
        infos[0].pid = (unsigned int)getpid();
        infos[0].usedGpuMemory = d->process_bytes;
        infos[0].gpuInstanceId = 0xFFFFFFFF;
        infos[0].computeInstanceId = 0xFFFFFFFF;
    }
    return NVML_SUCCESS;
}
