/*
 * dvit-edge: DvitTopKGather TensorRT plugin (IPluginV3), name "DvitTopKGather", version "1", namespace "dvit".
 *
 * Inputs:  0 scores [B, N] float32|float16, 1 tokens [B, N+1, C] float32|float16 (class token first).
 * Outputs: 0 kept_tokens [B, k+1, C] (type of tokens), 1 kept_indices [B, k] int32.
 * Attribute: k (int32, build-time constant, 1 <= k <= N <= 4096).
 * Formats: linear only; no INT8 (TensorRT reformats around the plugin when its neighbours run in INT8).
 *
 * Builds against the TensorRT 10.x and 11.x headers (NV_TENSORRT_MAJOR guards where they differ) and uses no
 * libnvinfer symbol: every TensorRT call goes through a virtual interface.
 */
#ifndef DVIT_TOPK_GATHER_PLUGIN_H
#define DVIT_TOPK_GATHER_PLUGIN_H

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cstdint>
#include <string>
#include <vector>

#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR < 10
#error "DvitTopKGather needs the TensorRT 10 (or newer) headers: IPluginV3 appeared in TensorRT 10.0."
#endif

#include "dvitLogging.h" // reportError / reportWarning (plugins/common/)

namespace dvit
{
namespace trt
{

constexpr char const* kPluginName = "DvitTopKGather";
constexpr char const* kPluginVersion = "1";
constexpr char const* kPluginNamespace = "dvit";

class TopKGatherPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit TopKGatherPlugin(int32_t k);
    TopKGatherPlugin(TopKGatherPlugin const& other);
    TopKGatherPlugin& operator=(TopKGatherPlugin const&) = delete;
    ~TopKGatherPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    int32_t k() const noexcept
    {
        return mK;
    }

private:
    //! Reports through the context's error recorder when there is one (runtime), and through reportError.
    void error(nvinfer1::ErrorCode code, std::string const& message) const noexcept;
    //! Checks concrete dims (no -1) of scores and tokens, and the kernel's limits; returns 0 or reports and returns -1.
    int32_t checkConcreteDims(nvinfer1::Dims const& scores, nvinfer1::Dims const& tokens,
        nvinfer1::DataType scoresType, nvinfer1::DataType tokensType, char const* where) const noexcept;
    //! Ranks, zero sizes, batch match, tokens = N+1: a fixed description of the first problem, or nullptr. Builds no
    //! string (enqueue calls it on every launch).
    static char const* structuralProblem(nvinfer1::Dims const& scores, nvinfer1::Dims const& tokens) noexcept;
    //! Reports "<where>: <problem> (scores [..], tokens [..])"; the only place shape strings are built.
    void reportShapeError(char const* where, char const* problem, nvinfer1::Dims const& scores,
        nvinfer1::Dims const& tokens, nvinfer1::ErrorCode code = nvinfer1::ErrorCode::kINVALID_ARGUMENT) const noexcept;

    int32_t mK;
    nvinfer1::IErrorRecorder* mErrorRecorder{nullptr};
    std::vector<nvinfer1::PluginField> mFieldsToSerialize;
    nvinfer1::PluginFieldCollection mFCToSerialize{};
};

class TopKGatherPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    TopKGatherPluginCreator();
    ~TopKGatherPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFieldNames;
    nvinfer1::PluginFieldCollection mFC{};
};

//! The op's creator (one static instance). This folder's CMakeLists.txt names it (dvit_plugin_op CREATOR), so that
//! the library entry points in plugins/api/ list it: getCreators() and the explicit/load-time registration.
nvinfer1::IPluginCreatorV3One& topkGatherPluginCreator() noexcept;

} // namespace trt
} // namespace dvit

#endif // DVIT_TOPK_GATHER_PLUGIN_H
