/*
 * dvit-edge: CPU-only test of the DvitTopKGather kernel logic (no GPU, no CUDA runtime call).
 *
 * Runs the very phase functions the kernel runs (topkGatherCommon.cuh), one emulated thread after another, with the
 * launch configuration the launcher computes, and checks:
 *   - within each phase between two barriers no two threads touch the same shared-memory slot (no data race),
 *     and every slot index stays inside the P-key buffer;
 *   - the sorted keys give exactly torch.sort(scores, descending=True, stable=True) (NaN highest, -0 == +0, ties by
 *     lower index), for float and half scores, random / tied / constant / special-value inputs, N in 1..4096;
 *   - the row tiles cover the k+1 output rows exactly once, and the emulated gather (every copy unit width 16..1
 *     byte) reproduces the reference output without writing outside it (guard zones) for many (N, k, C, tiles).
 * Exit code 0 and a final "OK" line when everything holds.
 */
#include "topkGatherCommon.cuh"

#include <cuda_fp16.h>
#include <vector_types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace dvit::topk;

namespace
{

int gFailures = 0;
long gSortCases = 0;
long gGatherCases = 0;
long gStagesChecked = 0;
// What the emulated launches cost (section 5 reports them per configuration): blocks run, blocks that sorted an
// image (a "selection"), and the compare-exchanges those sorts executed.
long gBlocks = 0;
long gSelections = 0;
long gCompareExchanges = 0;

#define CHECK(cond, ...)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            if (gFailures < 20)                                                                                        \
            {                                                                                                          \
                std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                            \
                std::printf(__VA_ARGS__);                                                                              \
                std::printf("\n");                                                                                     \
            }                                                                                                          \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

float toF(float v)
{
    return v;
}
float toF(__half v)
{
    return __half2float(v);
}

//! Reference order, written independently of makeKey: true if (sa, ia) comes strictly before (sb, ib).
bool refBefore(float sa, int32_t ia, float sb, int32_t ib)
{
    bool const na = std::isnan(sa);
    bool const nb = std::isnan(sb);
    if (na || nb)
    {
        if (na && nb)
        {
            return ia < ib;
        }
        return na;
    }
    if (sa != sb) // IEEE: -0 == +0
    {
        return sa > sb;
    }
    return ia < ib;
}

template <typename TS>
std::vector<int32_t> referenceOrder(std::vector<TS> const& scores)
{
    std::vector<int32_t> idx(scores.size());
    for (size_t i = 0; i < idx.size(); ++i)
    {
        idx[i] = static_cast<int32_t>(i);
    }
    std::stable_sort(idx.begin(), idx.end(),
        [&](int32_t a, int32_t b) { return refBefore(toF(scores[a]), a, toF(scores[b]), b); });
    return idx;
}

//! Emulates phases 1 and 2 of one block with `threads` threads; checks races and bounds on the way.
template <typename TS>
std::vector<uint64_t> emulateSort(std::vector<TS> const& scores, int32_t p, int32_t threads)
{
    int32_t const n = static_cast<int32_t>(scores.size());
    uint64_t const kSentinel = 0x0123456789ABCDEFull;
    std::vector<uint64_t> keys(static_cast<size_t>(p), kSentinel);

    for (int32_t tid = 0; tid < threads; ++tid)
    {
        loadKeys(keys.data(), scores.data(), n, p, tid, threads);
    }
    for (int32_t i = 0; i < p; ++i)
    {
        CHECK(keys[i] != kSentinel, "slot %d not loaded (N=%d P=%d)", i, n, p);
        if (i >= n)
        {
            CHECK(keys[i] == kPadKey, "padding slot %d wrong (N=%d)", i, n);
        }
    }

    std::vector<int32_t> touched(static_cast<size_t>(p));
    for (uint32_t size = 2; size <= static_cast<uint32_t>(p); size <<= 1)
    {
        for (uint32_t stride = size >> 1; stride > 0; stride >>= 1)
        {
            // Race/bounds audit of this stage with the kernel's exact thread -> pair mapping.
            std::fill(touched.begin(), touched.end(), 0);
            bool ok = true;
            for (int32_t tid = 0; tid < threads; ++tid)
            {
                for (uint32_t t = static_cast<uint32_t>(tid); t < static_cast<uint32_t>(p) / 2;
                     t += static_cast<uint32_t>(threads))
                {
                    uint32_t lo;
                    uint32_t hi;
                    bool asc;
                    bitonicPair(t, size, stride, lo, hi, asc);
                    if (lo >= static_cast<uint32_t>(p) || hi >= static_cast<uint32_t>(p) || lo >= hi)
                    {
                        ok = false;
                        continue;
                    }
                    ++touched[lo];
                    ++touched[hi];
                }
            }
            for (int32_t i = 0; i < p; ++i)
            {
                ok = ok && touched[i] == 1;
            }
            CHECK(ok, "stage size=%u stride=%u: a slot is touched %s once (P=%d, threads=%d)", size, stride,
                "other than", p, threads);
            ++gStagesChecked;
            for (int32_t tid = 0; tid < threads; ++tid)
            {
                sortStage(keys.data(), p, size, stride, tid, threads);
            }
        }
    }
    return keys;
}

//! One sorting block of an emulated launch (fused or select): counted in the launch statistics.
std::vector<uint64_t> emulateLaunchSort(std::vector<float> const& scores, LaunchConfig const& cfg)
{
    ++gBlocks;
    ++gSelections;
    int64_t stages = 0;
    for (int32_t size = 2; size <= cfg.p; size <<= 1)
    {
        for (int32_t stride = size >> 1; stride > 0; stride >>= 1)
        {
            ++stages;
        }
    }
    gCompareExchanges += stages * (cfg.p / 2);
    return emulateSort(scores, cfg.p, cfg.threads);
}

template <typename TS>
void checkSort(std::vector<TS> const& scores, char const* what)
{
    int32_t const n = static_cast<int32_t>(scores.size());
    LaunchConfig const cfg = makeLaunchConfig(1, n, 64, n, 4, 0, 0, 132, 0);
    CHECK(cfg.p >= n && (cfg.p & (cfg.p - 1)) == 0 && (n == 0 || cfg.p < 2 * n || cfg.p == 1), "bad P=%d for N=%d",
        cfg.p, n);
    CHECK(cfg.threads >= kMinThreads && cfg.threads <= kMaxThreads && cfg.threads % 32 == 0, "bad threads=%d",
        cfg.threads);
    CHECK(cfg.smemBytes <= 48 * 1024, "smem %d > 48 KiB", cfg.smemBytes);
    // The kernel's thread count, and a few others: the network must not depend on it.
    int32_t const threadCounts[] = {cfg.threads, 32, 1};
    std::vector<int32_t> const ref = referenceOrder(scores);
    for (int32_t threads : threadCounts)
    {
        std::vector<uint64_t> const keys = emulateSort(scores, cfg.p, threads);
        bool same = true;
        int32_t firstBad = -1;
        for (int32_t i = 0; i < n; ++i)
        {
            if (static_cast<int32_t>(keyIndex(keys[i])) != ref[i])
            {
                same = false;
                firstBad = i;
                break;
            }
        }
        CHECK(same, "%s: N=%d threads=%d: position %d has index %d, reference %d", what, n, threads, firstBad,
            firstBad >= 0 ? static_cast<int32_t>(keyIndex(keys[firstBad])) : -1, firstBad >= 0 ? ref[firstBad] : -1);
        for (int32_t i = n; i < cfg.p; ++i)
        {
            CHECK(keys[i] == kPadKey, "%s: padding not last (N=%d, slot %d)", what, n, i);
        }
        ++gSortCases;
        if (n > 1024 && threads != cfg.threads)
        {
            break; // one alternative thread count is enough for the big sizes
        }
    }
}

template <typename U>
void setUnit(U& u, uint8_t const* bytes)
{
    std::memcpy(&u, bytes, sizeof(U));
}

//! Emulates one whole launch (all blocks, all threads) of the gather for float scores and `tokenBytes`-byte tokens,
//! with copy unit U, against the reference. `misalign` shifts both token buffers by that many bytes.
template <typename U>
void checkGatherWithUnit(std::vector<float> const& scores, int32_t batch, int32_t n, int32_t c, int32_t k,
    int32_t tokenBytes, LaunchConfig const& cfg, size_t misalign)
{
    size_t const rowBytes = static_cast<size_t>(c) * tokenBytes;
    size_t const inBytes = static_cast<size_t>(batch) * (n + 1) * rowBytes;
    size_t const outBytes = static_cast<size_t>(batch) * (k + 1) * rowBytes;
    size_t const guard = 64;
    // Token bytes: a distinct pattern per (image, row, byte); guards hold 0xEE (never a token byte pattern here).
    std::vector<uint8_t> inBuf(inBytes + 2 * guard + misalign, 0xEE);
    std::vector<uint8_t> outBuf(outBytes + 2 * guard + misalign, 0xEE);
    uint8_t* in = inBuf.data() + guard + misalign;
    uint8_t* out = outBuf.data() + guard + misalign;
    for (size_t i = 0; i < inBytes; ++i)
    {
        size_t const row = i / rowBytes;
        in[i] = static_cast<uint8_t>((row * 131 + (i % rowBytes) * 7 + 1) % 233); // < 233, never 0xEE
    }
    std::vector<int32_t> indices(static_cast<size_t>(batch) * k + 2, -7);

    // Per image: the same scores shifted by image so images differ.
    for (int32_t b = 0; b < batch; ++b)
    {
        std::vector<float> s(scores);
        std::rotate(s.begin(), s.begin() + (b % n), s.end());
        std::vector<int32_t> const ref = referenceOrder(s);
        int32_t* const indicesRow = indices.data() + 1 + static_cast<size_t>(b) * k;
        auto const* tokensImage = reinterpret_cast<U const*>(in + static_cast<size_t>(b) * (n + 1) * rowBytes);
        auto* outImage = reinterpret_cast<U*>(out + static_cast<size_t>(b) * (k + 1) * rowBytes);
        if (cfg.selectOnce)
        {
            // Select launch: this image's one block sorts and writes kept_indices.
            std::vector<uint64_t> const keys = emulateLaunchSort(s, cfg);
            for (int32_t tid = 0; tid < cfg.threads; ++tid)
            {
                writeIndices(keys.data(), indicesRow, k, tid, cfg.threads);
            }
            // Gather launch (after the select launch completed): every tile copies its rows from kept_indices.
            for (int32_t tile = 0; tile < cfg.tiles; ++tile)
            {
                ++gBlocks;
                int32_t row0;
                int32_t row1;
                tileRows(k + 1, cfg.tiles, tile, row0, row1);
                for (int32_t tid = 0; tid < cfg.gatherThreads; ++tid)
                {
                    gatherRows(static_cast<int32_t const*>(indicesRow), tokensImage, outImage, cfg.unitsPerRow, row0,
                        row1, tid, cfg.gatherThreads);
                }
            }
        }
        else
        {
            for (int32_t tile = 0; tile < cfg.tiles; ++tile)
            {
                // One fused block: the emulated sort, then phase 3.
                std::vector<uint64_t> const keys = emulateLaunchSort(s, cfg);
                int32_t row0;
                int32_t row1;
                tileRows(k + 1, cfg.tiles, tile, row0, row1);
                for (int32_t tid = 0; tid < cfg.threads; ++tid)
                {
                    if (tile == 0)
                    {
                        writeIndices(keys.data(), indicesRow, k, tid, cfg.threads);
                    }
                    gatherRows(keys.data(), tokensImage, outImage, cfg.unitsPerRow, row0, row1, tid, cfg.threads);
                }
            }
        }
        // Reference for this image.
        bool ok = true;
        for (int32_t j = 0; j < k; ++j)
        {
            ok = ok && indices[1 + static_cast<size_t>(b) * k + j] == ref[j];
        }
        CHECK(ok, "indices differ (B=%d b=%d N=%d k=%d)", batch, b, n, k);
        for (int32_t r = 0; r <= k && ok; ++r)
        {
            int32_t const src = r == 0 ? 0 : ref[r - 1] + 1;
            ok = std::memcmp(out + (static_cast<size_t>(b) * (k + 1) + r) * rowBytes,
                     in + (static_cast<size_t>(b) * (n + 1) + src) * rowBytes, rowBytes)
                == 0;
            CHECK(ok, "row %d of image %d differs (N=%d k=%d C=%d unit=%d tiles=%d)", r, b, n, k, c, cfg.unitBytes,
                cfg.tiles);
        }
    }
    CHECK(indices.front() == -7 && indices.back() == -7, "kept_indices written out of bounds");
    bool guardsOk = true;
    for (size_t i = 0; i < guard + misalign; ++i)
    {
        guardsOk = guardsOk && outBuf[i] == 0xEE;
    }
    for (size_t i = guard + misalign + outBytes; i < outBuf.size(); ++i)
    {
        guardsOk = guardsOk && outBuf[i] == 0xEE;
    }
    CHECK(guardsOk, "write outside kept_tokens (N=%d k=%d C=%d unit=%d)", n, k, c, cfg.unitBytes);
    ++gGatherCases;
}

void checkGather(std::vector<float> const& scores, int32_t batch, int32_t c, int32_t k, int32_t tokenBytes,
    int32_t smCount, int32_t tilesOverride, size_t misalign)
{
    int32_t const n = static_cast<int32_t>(scores.size());
    // Pointers as the launcher would see them: 256-byte aligned buffers, shifted by `misalign`.
    uintptr_t const fakePtr = 0x10000 + misalign;
    LaunchConfig const cfg
        = makeLaunchConfig(batch, n, c, k, tokenBytes, fakePtr, fakePtr, smCount, tilesOverride);
    CHECK(cfg.tiles >= 1 && cfg.tiles <= k + 1, "tiles=%d out of [1, k+1=%d]", cfg.tiles, k + 1);
    CHECK(static_cast<int64_t>(cfg.unitsPerRow) * cfg.unitBytes == static_cast<int64_t>(c) * tokenBytes,
        "units do not tile the row");
    CHECK(fakePtr % static_cast<uintptr_t>(cfg.unitBytes) == 0, "unit %d misaligned", cfg.unitBytes);
    CHECK(cfg.selectOnce == (tilesOverride >= 0 && n >= kSelectOnceMinN && cfg.tiles > 1),
        "selectOnce=%d for N=%d tiles=%d override=%d", static_cast<int>(cfg.selectOnce), n, cfg.tiles, tilesOverride);
    CHECK(cfg.gatherThreads == (cfg.selectOnce ? kGatherThreads : cfg.threads), "gatherThreads=%d",
        cfg.gatherThreads);
    switch (cfg.unitBytes)
    {
    case 16: checkGatherWithUnit<uint4>(scores, batch, n, c, k, tokenBytes, cfg, misalign); break;
    case 8: checkGatherWithUnit<uint2>(scores, batch, n, c, k, tokenBytes, cfg, misalign); break;
    case 4: checkGatherWithUnit<uint32_t>(scores, batch, n, c, k, tokenBytes, cfg, misalign); break;
    case 2: checkGatherWithUnit<uint16_t>(scores, batch, n, c, k, tokenBytes, cfg, misalign); break;
    default: checkGatherWithUnit<uint8_t>(scores, batch, n, c, k, tokenBytes, cfg, misalign); break;
    }
}

std::vector<float> makeScores(int32_t n, int pattern, std::mt19937& rng)
{
    std::vector<float> s(static_cast<size_t>(n));
    std::uniform_real_distribution<float> uni(-8.0f, 0.0f); // log-probabilities
    std::uniform_int_distribution<int> small(0, 3);
    float const specials[] = {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::quiet_NaN(),
        std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(), 0.0f, -0.0f,
        std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
        std::numeric_limits<float>::max(), std::numeric_limits<float>::lowest(), 1.0f, -1.0f};
    for (int32_t i = 0; i < n; ++i)
    {
        switch (pattern)
        {
        case 0: s[i] = uni(rng); break;                                    // random
        case 1: s[i] = -static_cast<float>(small(rng)); break;             // heavy ties
        case 2: s[i] = -1.5f; break;                                       // all equal
        case 3: s[i] = static_cast<float>(i); break;                       // ascending
        case 4: s[i] = -static_cast<float>(i); break;                      // descending
        case 5: s[i] = specials[rng() % (sizeof(specials) / sizeof(float))]; break; // NaN, +-inf, +-0, ...
        default: s[i] = (rng() % 5 == 0) ? specials[rng() % 6] : uni(rng); break;  // mixed
        }
    }
    return s;
}

} // namespace

int main()
{
    std::mt19937 rng(20240611u);

    // 1. Key order on special values (the documented NaN / signed-zero rule).
    CHECK(makeKey(std::numeric_limits<float>::quiet_NaN(), 5) < makeKey(std::numeric_limits<float>::infinity(), 0),
        "NaN must rank above +inf");
    CHECK(makeKey(-std::numeric_limits<float>::quiet_NaN(), 5) < makeKey(std::numeric_limits<float>::infinity(), 0),
        "-NaN must rank above +inf");
    CHECK(makeKey(-0.0f, 1) > makeKey(0.0f, 0) && makeKey(-0.0f, 0) < makeKey(0.0f, 1), "-0 must equal +0");
    CHECK(makeKey(-std::numeric_limits<float>::infinity(), 4095) < kPadKey, "padding must sort last");
    CHECK(makeKey(1.0f, 7) < makeKey(1.0f, 8), "ties: lower index first");
    CHECK(makeKey(2.0f, 9) < makeKey(1.0f, 0), "higher score first");

    // 2. Tiling covers every row exactly once.
    for (int32_t r = 1; r <= 300; ++r)
    {
        for (int32_t tiles = 1; tiles <= r; tiles += (tiles < 20 ? 1 : 17))
        {
            std::vector<int32_t> cover(static_cast<size_t>(r), 0);
            for (int32_t t = 0; t < tiles; ++t)
            {
                int32_t a;
                int32_t b;
                tileRows(r, tiles, t, a, b);
                CHECK(0 <= a && a <= b && b <= r, "tile %d of %d: [%d, %d) outside [0, %d)", t, tiles, a, b, r);
                for (int32_t i = a; i < b && i < r && i >= 0; ++i)
                {
                    ++cover[i];
                }
            }
            CHECK(std::all_of(cover.begin(), cover.end(), [](int32_t v) { return v == 1; }),
                "rows not covered exactly once (R=%d tiles=%d)", r, tiles);
        }
    }

    // 3. Sorting network vs reference: every N up to 300, then the sizes around powers of two and the limit.
    std::vector<int32_t> sizes;
    for (int32_t n = 1; n <= 300; ++n)
    {
        sizes.push_back(n);
    }
    for (int32_t n : {383, 384, 385, 511, 512, 513, 576, 577, 1000, 1023, 1024, 1025, 2047, 2048, 2049, 3840, 4095,
             4096})
    {
        sizes.push_back(n);
    }
    for (int32_t n : sizes)
    {
        int const patterns = 7;
        for (int pattern = 0; pattern < patterns; ++pattern)
        {
            if (n > 300 && n % 2 == 1 && pattern != 0 && pattern != 1 && pattern != 6)
            {
                continue; // keep the big odd sizes to the main patterns
            }
            std::vector<float> const s = makeScores(n, pattern, rng);
            checkSort(s, "float");
            if (pattern == 0 || pattern == 1 || pattern == 5 || n <= 64)
            {
                std::vector<__half> h(s.size());
                for (size_t i = 0; i < s.size(); ++i)
                {
                    h[i] = __float2half(s[i]); // also creates new ties by rounding
                }
                checkSort(h, "half");
            }
        }
    }

    // 4. Whole-launch emulation of the gather: every k for small N, edges for the DeiT sizes, all copy units.
    struct GatherCase
    {
        int32_t n, c, tokenBytes;
        size_t misalign;
    };
    GatherCase const cases[] = {
        {1, 4, 4, 0}, {2, 3, 2, 0}, {7, 8, 2, 0}, {9, 5, 4, 0}, {16, 4, 4, 8}, {33, 2, 2, 4}, {49, 6, 2, 2},
        {49, 3, 2, 1}, // odd byte offset: 1-byte units
    };
    for (GatherCase const& gc : cases)
    {
        std::vector<float> const s = makeScores(gc.n, 6, rng);
        for (int32_t k = 1; k <= gc.n; ++k)
        {
            checkGather(s, 2, gc.c, k, gc.tokenBytes, 132, 0, gc.misalign);
            checkGather(s, 1, gc.c, k, gc.tokenBytes, 132, 3, gc.misalign);
        }
    }
    {
        // DeiT-S (N=196, C=384) at keep ratio 0.7, and edges, with the automatic tiling for B = 1, 8, 64.
        std::vector<float> const s196 = makeScores(196, 1, rng);
        for (int32_t k : {1, 2, 137, 195, 196})
        {
            for (int32_t batch : {1, 8, 64})
            {
                for (int32_t tokenBytes : {2, 4})
                {
                    // The tiling chosen for the real batch; only the first few images are emulated.
                    LaunchConfig const cfg
                        = makeLaunchConfig(batch, 196, 384, k, tokenBytes, 0x10000, 0x10000, 132, 0);
                    CHECK(cfg.unitBytes == 16 && cfg.threads == 256 && cfg.p == 256,
                        "DeiT-S config: unit %d threads %d", cfg.unitBytes, cfg.threads);
                    checkGather(s196, batch < 3 ? batch : 3, 384, k, tokenBytes, 132, cfg.tiles, 0);
                }
            }
        }
        std::vector<float> const s1024 = makeScores(1024, 6, rng);
        checkGather(s1024, 2, 16, 1024, 2, 8, 0, 0);
        checkGather(s1024, 1, 16, 700, 4, 8, 5, 0);
        std::vector<float> const s4096 = makeScores(4096, 0, rng);
        checkGather(s4096, 1, 4, 4096, 4, 4, 2, 0);
    }

    // 5. Large N (ViT-B/16 at 448-1024 px: C=768, keep ratio 0.7, fp16 tokens, a 132-SM GPU): whole launches with
    //    the automatic tiling, emulated and counted, next to the same tiling in one fused launch (tiles = -t, the
    //    rule before the select-once path), where every row tile sorts its image again.
    std::printf("large-N launches (C=768, k=0.7N, fp16 tokens, 132 SMs; launches blocks sorts compare-exchanges):\n"
                "  N B | select-once (automatic) | fused, same tiles (before)\n");
    for (int32_t n : {1024, 2048, 4096})
    {
        std::vector<float> const s = makeScores(n, 6, rng);
        for (int32_t batch : {1, 8})
        {
            int32_t const k = static_cast<int32_t>(0.7 * n + 0.5);
            LaunchConfig const cfg = makeLaunchConfig(batch, n, 768, k, 2, 0x10000, 0x10000, 132, 0);
            CHECK(cfg.selectOnce && cfg.tiles > 1, "N=%d B=%d: automatic tiling is not select-once", n, batch);
            long counts[2][3];
            for (int32_t variant = 0; variant < 2; ++variant)
            {
                long const blocks0 = gBlocks;
                long const sorts0 = gSelections;
                long const cx0 = gCompareExchanges;
                checkGather(s, batch, 768, k, 2, 132, variant == 0 ? 0 : -cfg.tiles, 0);
                counts[variant][0] = gBlocks - blocks0;
                counts[variant][1] = gSelections - sorts0;
                counts[variant][2] = gCompareExchanges - cx0;
            }
            CHECK(counts[0][1] == batch && counts[1][1] == static_cast<long>(batch) * cfg.tiles,
                "N=%d B=%d: %ld sorts (select-once), %ld (fused)", n, batch, counts[0][1], counts[1][1]);
            std::printf("  N=%d B=%d | 2 %ld %ld %ld | 1 %ld %ld %ld\n", n, batch, counts[0][0], counts[0][1],
                counts[0][2], counts[1][0], counts[1][1], counts[1][2]);
        }
    }

    std::printf("dvit_topk_gather_host_test: %ld sort cases (%ld bitonic stages audited for races), %ld gather "
                "launches emulated (%ld blocks, %ld of them sorting, %ld compare-exchanges), %d failures\n",
        gSortCases, gStagesChecked, gGatherCases, gBlocks, gSelections, gCompareExchanges, gFailures);
    if (gFailures != 0)
    {
        std::printf("FAILED\n");
        return 1;
    }
    std::printf("OK\n");
    return 0;
}
