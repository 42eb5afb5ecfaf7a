/*
 * dvit-edge: DvitTopKGather, selection and gather logic shared by the CUDA kernel and the host-side test.
 *
 * Everything here is a plain function of (thread id, thread count) so that one and the same code runs
 *   - on the GPU, one call per thread, with __syncthreads() between phases (topkGatherKernel.cu), and
 *   - on the CPU, in tests/topkGatherHostTest.cu, which runs every "thread" of a phase one after another and
 *     checks that no two threads of one phase touch the same shared-memory slot (no race between barriers),
 *     that no index leaves its buffer, and that the result equals a std::stable_sort reference.
 *
 * Selection order (the contract with the Python side): descending score, ties broken by the LOWER patch index,
 * i.e. torch.sort(scores, descending=True, stable=True). Scores are compared as float (half is widened).
 * NaN: every NaN (either sign, any payload) ranks ABOVE +inf and NaNs tie among themselves (lower index first);
 * -0.0 and +0.0 are equal. This is exactly torch.sort's / torch.topk's ordering.
 */
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#define DVIT_HD __host__ __device__ __forceinline__
#else
#define DVIT_HD inline
#endif

namespace dvit
{
namespace topk
{

//! Largest number of patch tokens N per image: the sort keeps N keys, padded to a power of two, as 8-byte keys in
//! shared memory (4096 * 8 B = 32 KiB, below the 48 KiB every architecture gives without an opt-in).
constexpr int32_t kMaxN = 4096;
//! Threads per block never exceed this (sort pairs per thread grow beyond it).
constexpr int32_t kMaxThreads = 1024;
//! Threads per block never go below this (the gather wants enough threads in flight).
constexpr int32_t kMinThreads = 256;
//! Key of a padding slot: larger than every real key, so padding sorts to the end.
constexpr uint64_t kPadKey = ~0ull;
//! From this N on, an image's selection runs once (a select launch writes kept_indices, then a gather launch copies
//! the rows named there) instead of once in every row tile: the sort costs O(P log^2 P) per block, which at large N
//! outweighs the second launch (~2 us), while below it the redundant sorts are cheaper than that launch.
constexpr int32_t kSelectOnceMinN = 1024;
//! Threads per block of the gather launch of the select-once path (no sort there, so no need for P/2 threads).
constexpr int32_t kGatherThreads = 256;

DVIT_HD uint32_t floatBits(float s)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(s);
#else
    uint32_t u;
    std::memcpy(&u, &s, sizeof(u));
    return u;
#endif
}

//! Maps a float to a uint32 whose unsigned order is the float order, after folding -0 onto +0 and every NaN onto
//! the canonical +NaN (which then ranks above +inf).
DVIT_HD uint32_t orderedScoreBits(float s)
{
    uint32_t u = floatBits(s);
    if (s != s)
    {
        u = 0x7FC00000u; // canonical quiet +NaN
    }
    else if (s == 0.0f)
    {
        u = 0u; // -0.0 == +0.0
    }
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

//! Composite key: sorting keys ASCENDING gives scores DESCENDING, then index ascending. Keys are unique.
DVIT_HD uint64_t makeKey(float s, uint32_t index)
{
    return (static_cast<uint64_t>(~orderedScoreBits(s)) << 32) | static_cast<uint64_t>(index);
}

DVIT_HD uint32_t keyIndex(uint64_t key)
{
    return static_cast<uint32_t>(key & 0xFFFFFFFFull);
}

DVIT_HD int32_t nextPow2(int32_t n)
{
    int32_t p = 1;
    while (p < n)
    {
        p <<= 1;
    }
    return p;
}

DVIT_HD float toFloat(float v)
{
    return v;
}

#if defined(__CUDACC__)
DVIT_HD float toFloat(__half v)
{
    return __half2float(v);
}
#endif

//! Positions of compare-exchange pair t (0 <= t < P/2) in the bitonic stage (size, stride): lo has the `stride` bit
//! clear, hi = lo + stride. The pair is sorted ascending when bit `size` of lo is clear.
DVIT_HD void bitonicPair(uint32_t t, uint32_t size, uint32_t stride, uint32_t& lo, uint32_t& hi, bool& ascending)
{
    lo = 2u * t - (t & (stride - 1u));
    hi = lo + stride;
    ascending = (lo & size) == 0u;
}

// ---------------------------------------------------------------------------------------------------------------
// Phases of one thread block. Between two phases the kernel calls __syncthreads().
// ---------------------------------------------------------------------------------------------------------------

//! Phase 1: keys[0, P) from one image's scores; slots N..P-1 get the padding key.
template <typename TS>
DVIT_HD void loadKeys(uint64_t* keys, TS const* scoresRow, int32_t n, int32_t p, int32_t tid, int32_t nthreads)
{
    for (int32_t i = tid; i < p; i += nthreads)
    {
        keys[i] = (i < n) ? makeKey(toFloat(scoresRow[i]), static_cast<uint32_t>(i)) : kPadKey;
    }
}

//! Phase 2 (repeated for every (size, stride) of the network): one bitonic stage over keys[0, P).
DVIT_HD void sortStage(uint64_t* keys, int32_t p, uint32_t size, uint32_t stride, int32_t tid, int32_t nthreads)
{
    uint32_t const pairs = static_cast<uint32_t>(p) >> 1;
    for (uint32_t t = static_cast<uint32_t>(tid); t < pairs; t += static_cast<uint32_t>(nthreads))
    {
        uint32_t lo;
        uint32_t hi;
        bool ascending;
        bitonicPair(t, size, stride, lo, hi, ascending);
        uint64_t const a = keys[lo];
        uint64_t const b = keys[hi];
        if ((a > b) == ascending)
        {
            keys[lo] = b;
            keys[hi] = a;
        }
    }
}

//! Phase 3a (row tile 0 only): the selected patch indices, best first.
DVIT_HD void writeIndices(uint64_t const* keys, int32_t* indicesRow, int32_t k, int32_t tid, int32_t nthreads)
{
    for (int32_t i = tid; i < k; i += nthreads)
    {
        indicesRow[i] = static_cast<int32_t>(keyIndex(keys[i]));
    }
}

//! Rows [row0, row1) of the R output rows that tile `tile` of `tiles` copies; the tiles cover 0..R-1 exactly once.
DVIT_HD void tileRows(int32_t r, int32_t tiles, int32_t tile, int32_t& row0, int32_t& row1)
{
    row0 = static_cast<int32_t>((static_cast<int64_t>(r) * tile) / tiles);
    row1 = static_cast<int32_t>((static_cast<int64_t>(r) * (tile + 1)) / tiles);
}

//! Source row of output row `row`: row 0 is the class token (source row 0), row j >= 1 is patch keys[j-1], which
//! is token row index + 1.
DVIT_HD int32_t sourceRow(uint64_t const* keys, int32_t row)
{
    return row == 0 ? 0 : static_cast<int32_t>(keyIndex(keys[row - 1])) + 1;
}

//! The same from an image's kept_indices row (the gather launch of the select-once path reads it from global
//! memory, where the select launch wrote it).
DVIT_HD int32_t sourceRow(int32_t const* indicesRow, int32_t row)
{
    return row == 0 ? 0 : indicesRow[row - 1] + 1;
}

//! Phase 3b: copy output rows [row0, row1) of one image. U is the copy unit (uint4 = 16 bytes, ..., uint8_t);
//! unitsPerRow = C * sizeof(token) / sizeof(U). Consecutive threads take consecutive units of a row (coalesced);
//! each thread issues up to kUnroll independent loads before its stores. `selection` is the sorted keys in shared
//! memory (fused path) or the image's kept_indices row (select-once path).
template <typename U, typename Sel>
DVIT_HD void gatherRows(Sel const* selection, U const* tokensImage, U* outImage, int32_t unitsPerRow, int32_t row0,
    int32_t row1, int32_t tid, int32_t nthreads)
{
    constexpr int32_t kUnroll = 4;
    int32_t const total = (row1 - row0) * unitsPerRow;
    for (int32_t base = tid; base < total; base += kUnroll * nthreads)
    {
        U v[kUnroll];
        int64_t dst[kUnroll];
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (int32_t j = 0; j < kUnroll; ++j)
        {
            int32_t const e = base + j * nthreads;
            dst[j] = -1;
            if (e < total)
            {
                int32_t const rr = e / unitsPerRow;
                int32_t const u = e - rr * unitsPerRow;
                int32_t const row = row0 + rr;
                int32_t const src = sourceRow(selection, row);
                v[j] = tokensImage[static_cast<int64_t>(src) * unitsPerRow + u];
                dst[j] = static_cast<int64_t>(row) * unitsPerRow + u;
            }
        }
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (int32_t j = 0; j < kUnroll; ++j)
        {
            if (dst[j] >= 0)
            {
                outImage[dst[j]] = v[j];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Launch configuration (host side), shared with the host test so that its emulation uses the real numbers.
// ---------------------------------------------------------------------------------------------------------------

//! Two shapes of launch:
//!   fused (selectOnce false): one launch, grid (B, tiles); every block sorts its image's keys, then copies its row
//!     tile (tile 0 also writes kept_indices). tiles > 1 recomputes the selection per tile.
//!   select-once (selectOnce true, N >= kSelectOnceMinN and more than one tile): a select launch, grid (B, 1),
//!     sorts and writes kept_indices; then a gather launch, grid (B, tiles), gatherThreads threads, no shared
//!     memory, copies the rows named in kept_indices. Each image is sorted exactly once.
struct LaunchConfig
{
    int32_t p;             //!< N padded to a power of two
    int32_t threads;       //!< threads per block of the sorting launch (fused, or select)
    int32_t tiles;         //!< row tiles per image (grid.y of the launch that copies rows)
    int32_t unitBytes;     //!< copy unit: 16, 8, 4, 2 or 1 bytes
    int32_t unitsPerRow;   //!< C * tokenBytes / unitBytes
    int32_t smemBytes;     //!< dynamic shared memory of the sorting launch: P keys of 8 bytes
    bool selectOnce;       //!< select launch + gather launch instead of one fused launch
    int32_t gatherThreads; //!< threads per block of the launch that copies rows (= threads when fused)
};

//! The widest copy unit that divides the row size and to which both token pointers are aligned.
inline int32_t chooseUnitBytes(int64_t rowBytes, uintptr_t tokens, uintptr_t out)
{
    for (int32_t w = 16; w > 1; w >>= 1)
    {
        if (rowBytes % w == 0 && tokens % static_cast<uintptr_t>(w) == 0 && out % static_cast<uintptr_t>(w) == 0)
        {
            return w;
        }
    }
    return 1;
}

//! tilesOverride > 0 forces the number of row tiles per image (clamped to [1, k+1]); < 0 forces -tilesOverride tiles
//! in the fused launch even from kSelectOnceMinN on (benchmarks compare the two); 0 chooses it: enough blocks
//! to give every SM about four (below kSelectOnceMinN each block recomputes the selection, ~1-2 us at N=196), but
//! no tile under ~8 KiB of output.
inline LaunchConfig makeLaunchConfig(int64_t batch, int32_t n, int64_t c, int32_t k, int32_t tokenBytes,
    uintptr_t tokens, uintptr_t out, int32_t smCount, int32_t tilesOverride)
{
    LaunchConfig cfg{};
    bool const forceFused = tilesOverride < 0;
    tilesOverride = forceFused ? -tilesOverride : tilesOverride;
    cfg.p = nextPow2(n);
    int32_t threads = cfg.p / 2;
    threads = threads < kMinThreads ? kMinThreads : threads;
    threads = threads > kMaxThreads ? kMaxThreads : threads;
    cfg.threads = threads;
    int64_t const rowBytes = c * tokenBytes;
    cfg.unitBytes = chooseUnitBytes(rowBytes, tokens, out);
    cfg.unitsPerRow = static_cast<int32_t>(rowBytes / cfg.unitBytes);
    cfg.smemBytes = cfg.p * static_cast<int32_t>(sizeof(uint64_t));

    int64_t const rows = static_cast<int64_t>(k) + 1;
    int64_t tiles;
    if (tilesOverride > 0)
    {
        tiles = tilesOverride;
    }
    else
    {
        constexpr int64_t kMinTileBytes = 8 * 1024;
        int64_t const sms = smCount > 0 ? smCount : 80;
        int64_t const byBytes = (rows * rowBytes + kMinTileBytes - 1) / kMinTileBytes;
        int64_t const byOccupancy = (4 * sms + batch - 1) / batch;
        tiles = byBytes < byOccupancy ? byBytes : byOccupancy;
    }
    tiles = tiles < 1 ? 1 : tiles;
    tiles = tiles > rows ? rows : tiles;
    cfg.tiles = static_cast<int32_t>(tiles);
    // With a single tile the fused launch already sorts once per image; a second launch would only add latency.
    cfg.selectOnce = !forceFused && n >= kSelectOnceMinN && cfg.tiles > 1;
    cfg.gatherThreads = cfg.selectOnce ? kGatherThreads : cfg.threads;
    return cfg;
}

} // namespace topk
} // namespace dvit
