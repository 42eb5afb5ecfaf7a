/*
 * dvit-edge: DvitTopKGather launcher, the extern "C" entry points of libdvit_topk_gather_kernel.so (and of the
 * plugin library, which embeds the same code). Validation happens here, before any CUDA call.
 */
#include "topkGatherCommon.cuh"
#include "topkGatherKernel.h"

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

namespace
{

using dvit::topk::kMaxN;
constexpr int64_t kMaxImageBytes = int64_t{1} << 30;

thread_local std::string tLastError;

int32_t fail(int32_t code, std::string message)
{
    tLastError = "DvitTopKGather: " + std::move(message);
    return code;
}

int32_t succeed()
{
    tLastError.clear();
    return DVIT_TOPK_OK;
}

char const* dtypeName(int32_t code)
{
    switch (code)
    {
    case DVIT_DTYPE_FLOAT32: return "float32";
    case DVIT_DTYPE_FLOAT16: return "float16";
    default: return "unsupported";
    }
}

std::string num(int64_t v)
{
    return std::to_string(v);
}

int32_t validate(int64_t batch, int64_t n, int64_t c, int64_t k, int32_t scoresDtype, int32_t tokensDtype)
{
    if (scoresDtype != DVIT_DTYPE_FLOAT32 && scoresDtype != DVIT_DTYPE_FLOAT16)
    {
        return fail(DVIT_TOPK_ERR_DTYPE,
            "scores dtype code " + num(scoresDtype) + " is not supported (0 = float32, 1 = float16)");
    }
    if (tokensDtype != DVIT_DTYPE_FLOAT32 && tokensDtype != DVIT_DTYPE_FLOAT16)
    {
        return fail(DVIT_TOPK_ERR_DTYPE,
            "tokens dtype code " + num(tokensDtype) + " is not supported (0 = float32, 1 = float16)");
    }
    if (batch < 1 || n < 1 || c < 1)
    {
        return fail(DVIT_TOPK_ERR_SHAPE,
            "zero-sized or negative dimension: B=" + num(batch) + ", N=" + num(n) + ", C=" + num(c)
                + " (scores [B, N], tokens [B, N+1, C]; all must be >= 1)");
    }
    if (n > kMaxN)
    {
        return fail(DVIT_TOPK_ERR_N_TOO_LARGE,
            "N=" + num(n) + " patch tokens exceeds the maximum of " + num(kMaxN) + " supported by the kernel");
    }
    if (k < 1 || k > n)
    {
        return fail(DVIT_TOPK_ERR_K, "k=" + num(k) + " is out of range: need 1 <= k <= N=" + num(n));
    }
    if (batch > std::numeric_limits<int32_t>::max())
    {
        return fail(DVIT_TOPK_ERR_SHAPE, "B=" + num(batch) + " exceeds the grid limit of 2^31-1 images");
    }
    // Loop counters inside one image are 32-bit (with headroom for the unrolled stride): one image's tokens must
    // fit in 1 GiB. (DeiT-B at N=196 needs 0.6 MiB.)
    int64_t const tokenBytes = tokensDtype == DVIT_DTYPE_FLOAT16 ? 2 : 4;
    if (c > kMaxImageBytes / tokenBytes || (n + 1) * c * tokenBytes > kMaxImageBytes)
    {
        return fail(DVIT_TOPK_ERR_SHAPE,
            "one image's tokens ((N+1)*C = " + num(n + 1) + "*" + num(c) + " elements) exceed 1 GiB");
    }
    return succeed();
}

} // namespace

extern "C" {

DVIT_EXPORT int32_t dvit_topk_gather_max_n(void)
{
    return kMaxN;
}

DVIT_EXPORT int32_t dvit_topk_gather_validate(
    int64_t batch, int64_t n, int64_t c, int64_t k, int32_t scores_dtype, int32_t tokens_dtype)
{
    return validate(batch, n, c, k, scores_dtype, tokens_dtype);
}

DVIT_EXPORT int32_t dvit_topk_gather_launch_tiles(void const* scores, void const* tokens, void* kept_tokens,
    int32_t* kept_indices, int64_t batch, int64_t n, int64_t c, int64_t k, int32_t scores_dtype, int32_t tokens_dtype,
    void* stream, int32_t tiles)
{
    int32_t const status = validate(batch, n, c, k, scores_dtype, tokens_dtype);
    if (status != DVIT_TOPK_OK)
    {
        return status;
    }
    if (scores == nullptr || tokens == nullptr || kept_tokens == nullptr || kept_indices == nullptr)
    {
        return fail(DVIT_TOPK_ERR_NULL,
            std::string("null device pointer:") + (scores == nullptr ? " scores" : "")
                + (tokens == nullptr ? " tokens" : "") + (kept_tokens == nullptr ? " kept_tokens" : "")
                + (kept_indices == nullptr ? " kept_indices" : ""));
    }
    if (tiles == std::numeric_limits<int32_t>::min())
    {
        return fail(DVIT_TOPK_ERR_SHAPE, "tiles=" + num(tiles) + " is out of range (0 = automatic)");
    }
    int32_t const err = dvit::detail::topkGatherEnqueue(scores, tokens, kept_tokens, kept_indices, batch,
        static_cast<int32_t>(n), c, static_cast<int32_t>(k), scores_dtype, tokens_dtype, stream, tiles);
    if (err != 0)
    {
        return fail(DVIT_TOPK_ERR_CUDA,
            std::string("kernel launch failed: ") + dvit::detail::cudaErrorText(err) + " (B=" + num(batch)
                + ", N=" + num(n) + ", C=" + num(c) + ", k=" + num(k) + ", scores " + dtypeName(scores_dtype)
                + ", tokens " + dtypeName(tokens_dtype) + ")");
    }
    return succeed();
}

DVIT_EXPORT int32_t dvit_topk_gather_launch(void const* scores, void const* tokens, void* kept_tokens,
    int32_t* kept_indices, int64_t batch, int64_t n, int64_t c, int64_t k, int32_t scores_dtype, int32_t tokens_dtype,
    void* stream)
{
    return dvit_topk_gather_launch_tiles(
        scores, tokens, kept_tokens, kept_indices, batch, n, c, k, scores_dtype, tokens_dtype, stream, 0);
}

DVIT_EXPORT char const* dvit_topk_gather_last_error(void)
{
    return tLastError.c_str();
}

} // extern "C"
