/*
 * dvit-edge: DvitTopKGather CUDA kernels.
 *
 * Fused path (N < 1024, or a single row tile): grid (B, tiles); block (b, t) sorts image b's N scores in shared
 * memory (bitonic network over composite (score, index) keys padded to a power of two), then copies its tile of the
 * k+1 output rows with 16-byte (or narrower) coalesced loads and stores. Every tile of an image recomputes the same
 * selection, which at small N is cheaper than a second launch; tile 0 also writes kept_indices.
 * Select-once path (N >= 1024 and more than one tile): a select launch, grid (B, 1), sorts each image once and
 * writes kept_indices; a gather launch, grid (B, tiles), copies the rows named there (same stream, so ordered).
 * kept_indices is an output anyway, so neither path needs a global workspace; no atomics.
 *
 * The per-thread work of each phase lives in topkGatherCommon.cuh, where the host test runs it too.
 */
#include "topkGatherCommon.cuh"
#include "topkGatherKernel.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>

namespace dvit
{
namespace topk
{
namespace
{

struct alignas(1) Unit1
{
    uint8_t v;
};

//! Phases 1 and 2 for one image: keys[0, P) in shared memory end up sorted (best first). Ends with a barrier.
template <typename TS>
__device__ __forceinline__ void sortImage(uint64_t* keys, TS const* scoresRow, int32_t n, int32_t p)
{
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const nthreads = static_cast<int32_t>(blockDim.x);
    loadKeys(keys, scoresRow, n, p, tid, nthreads);
    __syncthreads();
    // Every thread runs the same (size, stride) loop, so the barriers are reached uniformly.
    for (uint32_t size = 2; size <= static_cast<uint32_t>(p); size <<= 1)
    {
        for (uint32_t stride = size >> 1; stride > 0; stride >>= 1)
        {
            sortStage(keys, p, size, stride, tid, nthreads);
            __syncthreads();
        }
    }
}

//! Fused path: sort, then copy this block's row tile (tile 0 also writes kept_indices).
template <typename TS, typename U>
__global__ void __launch_bounds__(kMaxThreads) topkGatherKernel(TS const* __restrict__ scores,
    U const* __restrict__ tokens, U* __restrict__ keptTokens, int32_t* __restrict__ keptIndices, int32_t n,
    int32_t k, int32_t p, int32_t unitsPerRow, int32_t tiles)
{
    extern __shared__ __align__(16) unsigned char smemRaw[];
    uint64_t* keys = reinterpret_cast<uint64_t*>(smemRaw);

    int64_t const b = blockIdx.x;
    int32_t const tile = static_cast<int32_t>(blockIdx.y);
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const nthreads = static_cast<int32_t>(blockDim.x);

    sortImage(keys, scores + b * n, n, p);
    // From here on shared memory is only read.

    if (tile == 0)
    {
        writeIndices(keys, keptIndices + b * k, k, tid, nthreads);
    }
    int32_t row0;
    int32_t row1;
    tileRows(k + 1, tiles, tile, row0, row1);
    int64_t const inRows = static_cast<int64_t>(n) + 1;
    int64_t const outRows = static_cast<int64_t>(k) + 1;
    gatherRows(keys, tokens + b * inRows * unitsPerRow, keptTokens + b * outRows * unitsPerRow, unitsPerRow, row0,
        row1, tid, nthreads);
}

//! Select-once path, first launch (grid (B, 1)): sort the image once and write its kept_indices row.
template <typename TS>
__global__ void __launch_bounds__(kMaxThreads) topkSelectKernel(
    TS const* __restrict__ scores, int32_t* __restrict__ keptIndices, int32_t n, int32_t k, int32_t p)
{
    extern __shared__ __align__(16) unsigned char smemRaw[];
    uint64_t* keys = reinterpret_cast<uint64_t*>(smemRaw);
    int64_t const b = blockIdx.x;
    sortImage(keys, scores + b * n, n, p);
    writeIndices(keys, keptIndices + b * k, k, static_cast<int32_t>(threadIdx.x), static_cast<int32_t>(blockDim.x));
}

//! Select-once path, second launch (grid (B, tiles), after topkSelectKernel on the same stream): copy this block's
//! row tile from the rows named in kept_indices. No shared memory, no barrier.
template <typename U>
__global__ void __launch_bounds__(kGatherThreads) topkGatherRowsKernel(int32_t const* __restrict__ keptIndices,
    U const* __restrict__ tokens, U* __restrict__ keptTokens, int32_t n, int32_t k, int32_t unitsPerRow, int32_t tiles)
{
    int64_t const b = blockIdx.x;
    int32_t row0;
    int32_t row1;
    tileRows(k + 1, tiles, static_cast<int32_t>(blockIdx.y), row0, row1);
    int64_t const inRows = static_cast<int64_t>(n) + 1;
    int64_t const outRows = static_cast<int64_t>(k) + 1;
    gatherRows(keptIndices + b * k, tokens + b * inRows * unitsPerRow, keptTokens + b * outRows * unitsPerRow,
        unitsPerRow, row0, row1, static_cast<int32_t>(threadIdx.x), static_cast<int32_t>(blockDim.x));
}

template <typename TS, typename U>
cudaError_t launchTyped(
    void const* scores, void const* tokens, void* keptTokens, int32_t* keptIndices, int64_t batch, int32_t n,
    int32_t k, LaunchConfig const& cfg, cudaStream_t stream)
{
    dim3 const block(static_cast<unsigned>(cfg.threads), 1, 1);
    size_t const smem = static_cast<size_t>(cfg.smemBytes);
    if (!cfg.selectOnce)
    {
        dim3 const grid(static_cast<unsigned>(batch), static_cast<unsigned>(cfg.tiles), 1);
        topkGatherKernel<TS, U><<<grid, block, smem, stream>>>(static_cast<TS const*>(scores),
            static_cast<U const*>(tokens), static_cast<U*>(keptTokens), keptIndices, n, k, cfg.p, cfg.unitsPerRow,
            cfg.tiles);
        return cudaGetLastError();
    }
    topkSelectKernel<TS><<<dim3(static_cast<unsigned>(batch), 1, 1), block, smem, stream>>>(
        static_cast<TS const*>(scores), keptIndices, n, k, cfg.p);
    cudaError_t const err = cudaGetLastError();
    if (err != cudaSuccess)
    {
        return err;
    }
    dim3 const grid(static_cast<unsigned>(batch), static_cast<unsigned>(cfg.tiles), 1);
    topkGatherRowsKernel<U><<<grid, dim3(static_cast<unsigned>(cfg.gatherThreads), 1, 1), 0, stream>>>(
        keptIndices, static_cast<U const*>(tokens), static_cast<U*>(keptTokens), n, k, cfg.unitsPerRow, cfg.tiles);
    return cudaGetLastError();
}

template <typename TS>
cudaError_t launchByUnit(void const* scores, void const* tokens, void* keptTokens, int32_t* keptIndices,
    int64_t batch, int32_t n, int32_t k, LaunchConfig const& cfg, cudaStream_t stream)
{
    switch (cfg.unitBytes)
    {
    case 16: return launchTyped<TS, uint4>(scores, tokens, keptTokens, keptIndices, batch, n, k, cfg, stream);
    case 8: return launchTyped<TS, uint2>(scores, tokens, keptTokens, keptIndices, batch, n, k, cfg, stream);
    case 4: return launchTyped<TS, uint32_t>(scores, tokens, keptTokens, keptIndices, batch, n, k, cfg, stream);
    case 2: return launchTyped<TS, uint16_t>(scores, tokens, keptTokens, keptIndices, batch, n, k, cfg, stream);
    default: return launchTyped<TS, Unit1>(scores, tokens, keptTokens, keptIndices, batch, n, k, cfg, stream);
    }
}

//! Multiprocessor count of the current device, cached per device (a plain attribute query, legal during graph
//! capture).
int32_t smCountOfCurrentDevice()
{
    constexpr int32_t kMaxDevices = 64;
    static std::atomic<int32_t> cache[kMaxDevices];
    int32_t device = 0;
    if (cudaGetDevice(&device) != cudaSuccess)
    {
        return 0;
    }
    if (device >= 0 && device < kMaxDevices)
    {
        int32_t cached = cache[device].load(std::memory_order_relaxed);
        if (cached > 0)
        {
            return cached;
        }
    }
    int32_t count = 0;
    if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess)
    {
        return 0;
    }
    if (device >= 0 && device < kMaxDevices)
    {
        cache[device].store(count, std::memory_order_relaxed);
    }
    return count;
}

} // namespace
} // namespace topk

namespace detail
{

int32_t topkGatherEnqueue(void const* scores, void const* tokens, void* keptTokens, int32_t* keptIndices,
    int64_t batch, int32_t n, int64_t c, int32_t k, int32_t scoresDtype, int32_t tokensDtype, void* stream,
    int32_t tilesOverride)
{
    using namespace topk;
    int32_t const tokenBytes = tokensDtype == DVIT_DTYPE_FLOAT16 ? 2 : 4;
    LaunchConfig const cfg = makeLaunchConfig(batch, n, c, k, tokenBytes, reinterpret_cast<uintptr_t>(tokens),
        reinterpret_cast<uintptr_t>(keptTokens), smCountOfCurrentDevice(), tilesOverride);
    auto const s = static_cast<cudaStream_t>(stream);
    cudaError_t const err = scoresDtype == DVIT_DTYPE_FLOAT16
        ? launchByUnit<__half>(scores, tokens, keptTokens, keptIndices, batch, n, k, cfg, s)
        : launchByUnit<float>(scores, tokens, keptTokens, keptIndices, batch, n, k, cfg, s);
    return static_cast<int32_t>(err);
}

char const* cudaErrorText(int32_t error)
{
    return cudaGetErrorString(static_cast<cudaError_t>(error));
}

} // namespace detail
} // namespace dvit
