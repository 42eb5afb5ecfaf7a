/*
 * dvit-edge: DvitTopKGather kernel, public interface.
 *
 * Computes, for each image b of a batch:
 *   kept_indices[b, :] = the k patch indices (0..N-1) with the highest scores[b, :], in descending score order,
 *                        ties broken by the lower index (= torch.sort(scores, descending=True, stable=True)[1][:, :k])
 *   kept_tokens[b, 0]  = tokens[b, 0]                       (the class token)
 *   kept_tokens[b, j]  = tokens[b, kept_indices[b, j-1] + 1] for j = 1..k
 * Shapes: scores [B, N], tokens [B, N+1, C], kept_tokens [B, k+1, C], kept_indices [B, k] int32; all contiguous.
 * NaN scores rank above +inf (as in torch.sort); -0.0 equals +0.0.
 *
 * The C entry points below need no TensorRT and are what Python calls through ctypes
 * (libdvit_topk_gather_kernel.so). Arguments are validated before any CUDA call, so a bad call fails cleanly even
 * on a machine without a GPU.
 */
#ifndef DVIT_TOPK_GATHER_KERNEL_H
#define DVIT_TOPK_GATHER_KERNEL_H

#include "dvitMacros.h" /* DVIT_EXPORT (plugins/common/) */

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Data type codes: the same numbers as nvinfer1::DataType::kFLOAT and ::kHALF. */
#define DVIT_DTYPE_FLOAT32 0
#define DVIT_DTYPE_FLOAT16 1

/* Return codes. */
#define DVIT_TOPK_OK 0
#define DVIT_TOPK_ERR_DTYPE 1      /* a dtype code other than DVIT_DTYPE_FLOAT32 / DVIT_DTYPE_FLOAT16 */
#define DVIT_TOPK_ERR_SHAPE 2      /* B, N or C < 1, or a size too large to index */
#define DVIT_TOPK_ERR_K 3          /* k < 1 or k > N */
#define DVIT_TOPK_ERR_N_TOO_LARGE 4 /* N > dvit_topk_gather_max_n() */
#define DVIT_TOPK_ERR_NULL 5       /* a null pointer */
#define DVIT_TOPK_ERR_CUDA 6       /* the kernel launch failed (message names the CUDA error) */

/* Largest N (patch tokens per image) the kernel supports: 4096. */
DVIT_EXPORT int32_t dvit_topk_gather_max_n(void);

/* Checks shapes, k and dtypes only (no pointers, no CUDA). Returns a DVIT_TOPK_* code; on failure the message is
 * available from dvit_topk_gather_last_error(). */
DVIT_EXPORT int32_t dvit_topk_gather_validate(
    int64_t batch, int64_t n, int64_t c, int64_t k, int32_t scores_dtype, int32_t tokens_dtype);

/* Enqueues the kernel on `stream` (a cudaStream_t; NULL = the legacy default stream). Pointers are device pointers
 * to contiguous tensors. Returns a DVIT_TOPK_* code. Asynchronous: errors during execution show up at the next
 * synchronisation, as for any kernel. */
DVIT_EXPORT int32_t dvit_topk_gather_launch(void const* scores, void const* tokens, void* kept_tokens,
    int32_t* kept_indices, int64_t batch, int64_t n, int64_t c, int64_t k, int32_t scores_dtype, int32_t tokens_dtype,
    void* stream);

/* As dvit_topk_gather_launch, with the number of row tiles per image forced, for tuning and benchmarks only:
 * 0 = automatic; t > 0 = t tiles (from N = 1024 on and with t > 1: select launch + gather launch); t < 0 = -t tiles
 * in the fused launch whatever N (every tile sorts again: the rule before the select-once path, for comparison). */
DVIT_EXPORT int32_t dvit_topk_gather_launch_tiles(void const* scores, void const* tokens, void* kept_tokens,
    int32_t* kept_indices, int64_t batch, int64_t n, int64_t c, int64_t k, int32_t scores_dtype, int32_t tokens_dtype,
    void* stream, int32_t tiles);

/* Message of the most recent failed call of this thread; "" if the most recent call succeeded. The pointer stays
 * valid until the next call of this library's functions on the same thread. */
DVIT_EXPORT char const* dvit_topk_gather_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#ifdef __cplusplus
namespace dvit
{
namespace detail
{
//! Implemented in topkGatherKernel.cu: launches after validation. Returns a cudaError_t value (0 = success).
//! smCount <= 0 lets the function query the current device.
int32_t topkGatherEnqueue(void const* scores, void const* tokens, void* keptTokens, int32_t* keptIndices,
    int64_t batch, int32_t n, int64_t c, int32_t k, int32_t scoresDtype, int32_t tokensDtype, void* stream,
    int32_t tilesOverride);

//! Name of a cudaError_t value (implemented in topkGatherKernel.cu, so that host-only code needs no CUDA headers).
char const* cudaErrorText(int32_t error);
} // namespace detail
} // namespace dvit
#endif

#endif /* DVIT_TOPK_GATHER_KERNEL_H */
