/*
 * dvit-edge: DvitTopKGather TensorRT plugin (IPluginV3 / IPluginV3OneCore / IPluginV3OneBuild /
 * IPluginV3OneRuntime) and its IPluginCreatorV3One. See topkGatherPlugin.h and README.md.
 *
 * Bad configurations are refused while the engine is built, with a message naming the problem and a non-zero
 * return: getOutputShapes (ranks; any dimension that is a build-time constant), getOutputDataTypes (types),
 * configurePlugin (the profile's min/max dimensions), createPlugin (the attribute k). At run time
 * onShapeChange and enqueue check the concrete shapes again and fail the call, never the process.
 */
#include "topkGatherPlugin.h"

#include "topkGatherKernel.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <new>

using nvinfer1::DataType;
using nvinfer1::Dims;
using nvinfer1::DimsExprs;
using nvinfer1::DynamicPluginTensorDesc;
using nvinfer1::ErrorCode;
using nvinfer1::IDimensionExpr;
using nvinfer1::IExprBuilder;
using nvinfer1::ILogger;
using nvinfer1::IPluginCapability;
using nvinfer1::IPluginV3;
using nvinfer1::PluginCapabilityType;
using nvinfer1::PluginField;
using nvinfer1::PluginFieldCollection;
using nvinfer1::PluginFieldType;
using nvinfer1::PluginTensorDesc;
using nvinfer1::TensorFormat;

namespace dvit
{
namespace trt
{

// ------------------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------------------

namespace
{

//! Message prefix, "dvit::DvitTopKGather v1: " (function-local and never destroyed, as lastErrorState).
std::string const& who()
{
    static std::string const* const prefix
        = new std::string(std::string(kPluginNamespace) + "::" + kPluginName + " v" + kPluginVersion + ": ");
    return *prefix;
}

char const* dataTypeName(DataType t)
{
    switch (t)
    {
    case DataType::kFLOAT: return "FLOAT (float32)";
    case DataType::kHALF: return "HALF (float16)";
    case DataType::kINT8: return "INT8";
    case DataType::kINT32: return "INT32";
    case DataType::kBOOL: return "BOOL";
    case DataType::kUINT8: return "UINT8";
    case DataType::kFP8: return "FP8";
    case DataType::kBF16: return "BF16";
    case DataType::kINT64: return "INT64";
    default: return "an unsupported type";
    }
}

bool isSupportedFloat(DataType t)
{
    return t == DataType::kFLOAT || t == DataType::kHALF;
}

int32_t dtypeCode(DataType t)
{
    return t == DataType::kHALF ? DVIT_DTYPE_FLOAT16 : (t == DataType::kFLOAT ? DVIT_DTYPE_FLOAT32 : -1);
}

std::string dimsToString(Dims const& d)
{
    std::string s = "[";
    int32_t const rank = d.nbDims < 0 ? 0 : (d.nbDims > Dims::MAX_DIMS ? Dims::MAX_DIMS : d.nbDims);
    for (int32_t i = 0; i < rank; ++i)
    {
        s += (i ? ", " : "") + std::to_string(static_cast<int64_t>(d.d[i]));
    }
    return s + "]";
}

bool constantOf(IDimensionExpr const* e, int64_t& value)
{
    if (e != nullptr && e->isConstant())
    {
        value = e->getConstantValue();
        return true;
    }
    return false;
}

} // namespace

// ------------------------------------------------------------------------------------------------------------
// Plugin
// ------------------------------------------------------------------------------------------------------------

TopKGatherPlugin::TopKGatherPlugin(int32_t k)
    : mK(k)
{
}

TopKGatherPlugin::TopKGatherPlugin(TopKGatherPlugin const& other)
    : IPluginV3(other)
    , IPluginV3OneCore(other)
    , IPluginV3OneBuild(other)
    , IPluginV3OneRuntime(other)
    , mK(other.mK)
    , mErrorRecorder(other.mErrorRecorder)
{
}

void TopKGatherPlugin::error(ErrorCode code, std::string const& message) const noexcept
{
    try
    {
        std::string const full = who() + message;
        if (mErrorRecorder != nullptr)
        {
            mErrorRecorder->reportError(code, full.c_str());
        }
        reportError(full);
    }
    catch (...)
    {
        std::fputs("DvitTopKGather: error while reporting an error\n", stderr);
    }
}

IPluginCapability* TopKGatherPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    case PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    }
    return nullptr;
}

IPluginV3* TopKGatherPlugin::clone() noexcept
{
    try
    {
        return new TopKGatherPlugin(*this);
    }
    catch (std::exception const& e)
    {
        error(ErrorCode::kFAILED_ALLOCATION, std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

char const* TopKGatherPlugin::getPluginName() const noexcept
{
    return kPluginName;
}

char const* TopKGatherPlugin::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* TopKGatherPlugin::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

int32_t TopKGatherPlugin::getNbOutputs() const noexcept
{
    return 2;
}

int32_t TopKGatherPlugin::checkConcreteDims(
    Dims const& scores, Dims const& tokens, DataType scoresType, DataType tokensType, char const* where) const noexcept
{
    try
    {
        if (char const* problem = structuralProblem(scores, tokens))
        {
            reportShapeError(where, problem, scores, tokens);
            return -1;
        }
        if (dvit_topk_gather_validate(scores.d[0], scores.d[1], tokens.d[2], mK, dtypeCode(scoresType),
                dtypeCode(tokensType))
            != DVIT_TOPK_OK)
        {
            reportShapeError(where, dvit_topk_gather_last_error(), scores, tokens);
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        return -1;
    }
}

char const* TopKGatherPlugin::structuralProblem(Dims const& scores, Dims const& tokens) noexcept
{
    if (scores.nbDims != 2 || tokens.nbDims != 3)
    {
        return "scores must be [B, N] and tokens [B, N+1, C]";
    }
    if (scores.d[0] < 1 || scores.d[1] < 1 || tokens.d[0] < 1 || tokens.d[1] < 1 || tokens.d[2] < 1)
    {
        return "zero-sized dimension";
    }
    if (scores.d[0] != tokens.d[0])
    {
        return "batch mismatch, scores and tokens differ in B";
    }
    if (tokens.d[1] != scores.d[1] + 1)
    {
        return "tokens dim 1 must be N+1 (class token first)";
    }
    return nullptr;
}

void TopKGatherPlugin::reportShapeError(char const* where, char const* problem, Dims const& scores, Dims const& tokens,
    ErrorCode code) const noexcept
{
    try
    {
        error(code,
            std::string(where) + ": " + problem + " (scores " + dimsToString(scores) + ", tokens "
                + dimsToString(tokens) + ")");
    }
    catch (...)
    {
        std::fputs("DvitTopKGather: error while reporting an error\n", stderr);
    }
}

int32_t TopKGatherPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 2)
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "configurePlugin: expected 2 inputs (scores, tokens) and 2 outputs, got " + std::to_string(nbInputs)
                    + " and " + std::to_string(nbOutputs));
            return -1;
        }
        char const* const names[2] = {"scores", "tokens"};
        for (int32_t i = 0; i < 2; ++i)
        {
            if (!isSupportedFloat(in[i].desc.type))
            {
                error(ErrorCode::kINVALID_ARGUMENT,
                    std::string("configurePlugin: input ") + std::to_string(i) + " (" + names[i] + ") is "
                        + dataTypeName(in[i].desc.type) + "; only FLOAT and HALF are supported");
                return -1;
            }
        }
        if (out[0].desc.type != in[1].desc.type || out[1].desc.type != DataType::kINT32)
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                std::string("configurePlugin: outputs must be (type of tokens, INT32), got (")
                    + dataTypeName(out[0].desc.type) + ", " + dataTypeName(out[1].desc.type) + ")");
            return -1;
        }
        // The profile's bounds must each be valid shapes. Unknown (negative) bounds are left to onShapeChange.
        bool boundsKnown = true;
        for (int32_t i = 0; i < 2; ++i)
        {
            for (int32_t d = 0; d < in[i].min.nbDims; ++d)
            {
                boundsKnown = boundsKnown && in[i].min.d[d] >= 0;
            }
            for (int32_t d = 0; d < in[i].max.nbDims; ++d)
            {
                boundsKnown = boundsKnown && in[i].max.d[d] >= 0;
            }
        }
        if (boundsKnown)
        {
            DataType const st = in[0].desc.type;
            DataType const tt = in[1].desc.type;
            if (checkConcreteDims(in[0].min, in[1].min, st, tt, "configurePlugin (profile minimum)") != 0
                || checkConcreteDims(in[0].max, in[1].max, st, tt, "configurePlugin (profile maximum)") != 0)
            {
                return -1;
            }
        }
        return 0;
    }
    catch (...)
    {
        return -1;
    }
}

bool TopKGatherPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != 2 || nbOutputs != 2 || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        error(ErrorCode::kINVALID_ARGUMENT,
            "supportsFormatCombination: expected 2 inputs and 2 outputs, got " + std::to_string(nbInputs) + " and "
                + std::to_string(nbOutputs) + " (pos " + std::to_string(pos) + ")");
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: // scores
    case 1: // tokens
        return isSupportedFloat(desc.type);
    case 2: // kept_tokens: a copy of tokens rows
        return desc.type == inOut[1].desc.type;
    default: // kept_indices
        return desc.type == DataType::kINT32;
    }
}

int32_t TopKGatherPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        if (outputTypes == nullptr || inputTypes == nullptr || nbInputs != 2 || nbOutputs != 2)
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "getOutputDataTypes: expected 2 inputs (scores, tokens) and 2 outputs, got "
                    + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
            return -1;
        }
        char const* const names[2] = {"scores", "tokens"};
        for (int32_t i = 0; i < 2; ++i)
        {
            if (!isSupportedFloat(inputTypes[i]))
            {
                error(ErrorCode::kINVALID_ARGUMENT,
                    std::string("input ") + std::to_string(i) + " (" + names[i] + ") is " + dataTypeName(inputTypes[i])
                        + "; DvitTopKGather supports FLOAT and HALF only (for INT8 neighbours TensorRT reformats;"
                          " in a strongly typed network insert a Cast/DequantizeLinear before the plugin)");
                return -1;
            }
        }
        outputTypes[0] = inputTypes[1];
        outputTypes[1] = DataType::kINT32;
        return 0;
    }
    catch (...)
    {
        return -1;
    }
}

int32_t TopKGatherPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    try
    {
        if (inputs == nullptr || outputs == nullptr || nbInputs != 2 || nbOutputs != 2)
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "getOutputShapes: expected 2 inputs (scores [B, N], tokens [B, N+1, C]) and 2 outputs, got "
                    + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs));
            return -1;
        }
        DimsExprs const& scores = inputs[0];
        DimsExprs const& tokens = inputs[1];
        if (scores.nbDims != 2 || tokens.nbDims != 3)
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "getOutputShapes: scores must be 2-D [B, N] and tokens 3-D [B, N+1, C], got ranks "
                    + std::to_string(scores.nbDims) + " and " + std::to_string(tokens.nbDims));
            return -1;
        }
        // Checks on whatever is known at build time; dynamic dims are checked in configurePlugin/onShapeChange.
        int64_t b = 0;
        int64_t n = 0;
        int64_t tb = 0;
        int64_t tn = 0;
        int64_t c = 0;
        bool const hasB = constantOf(scores.d[0], b);
        bool const hasN = constantOf(scores.d[1], n);
        bool const hasTB = constantOf(tokens.d[0], tb);
        bool const hasTN = constantOf(tokens.d[1], tn);
        bool const hasC = constantOf(tokens.d[2], c);
        if ((hasB && b < 1) || (hasN && n < 1) || (hasTB && tb < 1) || (hasTN && tn < 1) || (hasC && c < 1))
        {
            error(ErrorCode::kINVALID_ARGUMENT, "getOutputShapes: zero-sized dimension in scores or tokens");
            return -1;
        }
        if (hasB && hasTB && b != tb)
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "getOutputShapes: batch mismatch, scores has B=" + std::to_string(b) + " but tokens B="
                    + std::to_string(tb));
            return -1;
        }
        if (hasN && hasTN && tn != n + 1)
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "getOutputShapes: tokens dim 1 must be N+1 = " + std::to_string(n + 1) + " (class token first), got "
                    + std::to_string(tn));
            return -1;
        }
        int64_t const knownN = hasN ? n : (hasTN ? tn - 1 : -1);
        if (knownN > 0 && knownN > dvit_topk_gather_max_n())
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "getOutputShapes: N=" + std::to_string(knownN) + " patch tokens exceeds the kernel's maximum of "
                    + std::to_string(dvit_topk_gather_max_n()));
            return -1;
        }
        if (mK < 1 || (knownN > 0 && mK > knownN))
        {
            error(ErrorCode::kINVALID_ARGUMENT,
                "getOutputShapes: k=" + std::to_string(mK) + " is out of range, need 1 <= k <= N"
                    + (knownN > 0 ? " = " + std::to_string(knownN) : std::string()));
            return -1;
        }
        IDimensionExpr const* kPlusOne = exprBuilder.constant(static_cast<int64_t>(mK) + 1);
        IDimensionExpr const* kExpr = exprBuilder.constant(mK);
        if (kPlusOne == nullptr || kExpr == nullptr)
        {
            error(ErrorCode::kINTERNAL_ERROR, "getOutputShapes: IExprBuilder::constant returned null");
            return -1;
        }
        outputs[0].nbDims = 3;
        outputs[0].d[0] = tokens.d[0];
        outputs[0].d[1] = kPlusOne;
        outputs[0].d[2] = tokens.d[2];
        outputs[1].nbDims = 2;
        outputs[1].d[0] = scores.d[0];
        outputs[1].d[1] = kExpr;
        return 0;
    }
    catch (...)
    {
        return -1;
    }
}

size_t TopKGatherPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

int32_t TopKGatherPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 2)
    {
        error(ErrorCode::kINVALID_ARGUMENT, "onShapeChange: expected 2 inputs and 2 outputs");
        return -1;
    }
    return checkConcreteDims(in[0].dims, in[1].dims, in[0].type, in[1].type, "onShapeChange");
}

int32_t TopKGatherPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    // The hot path: integer checks only. The launcher validates B, N, C, k and the types once (before any CUDA
    // call); strings are built only when something failed.
    if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        error(ErrorCode::kINVALID_ARGUMENT, "enqueue: null descriptor or buffer array");
        return -1;
    }
    Dims const& s = inputDesc[0].dims;
    Dims const& t = inputDesc[1].dims;
    if (char const* problem = structuralProblem(s, t))
    {
        reportShapeError("enqueue", problem, s, t);
        return -1;
    }
    int32_t const status = dvit_topk_gather_launch(inputs[0], inputs[1], outputs[0], static_cast<int32_t*>(outputs[1]),
        s.d[0], s.d[1], t.d[2], mK, dtypeCode(inputDesc[0].type), dtypeCode(inputDesc[1].type),
        static_cast<void*>(stream));
    if (status != DVIT_TOPK_OK)
    {
        reportShapeError("enqueue", dvit_topk_gather_last_error(), s, t,
            status == DVIT_TOPK_ERR_CUDA ? ErrorCode::kFAILED_EXECUTION : ErrorCode::kINVALID_ARGUMENT);
        return -1;
    }
    return 0;
}

IPluginV3* TopKGatherPlugin::attachToContext(nvinfer1::IPluginResourceContext* context) noexcept
{
    try
    {
        auto* copy = new TopKGatherPlugin(*this);
        copy->mErrorRecorder = context != nullptr ? context->getErrorRecorder() : nullptr;
        return copy;
    }
    catch (std::exception const& e)
    {
        error(ErrorCode::kFAILED_ALLOCATION, std::string("attachToContext failed: ") + e.what());
    }
    return nullptr;
}

PluginFieldCollection const* TopKGatherPlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mFieldsToSerialize.clear();
        mFieldsToSerialize.emplace_back("k", &mK, PluginFieldType::kINT32, 1);
        mFCToSerialize.nbFields = static_cast<int32_t>(mFieldsToSerialize.size());
        mFCToSerialize.fields = mFieldsToSerialize.data();
        return &mFCToSerialize;
    }
    catch (...)
    {
        return nullptr;
    }
}

// ------------------------------------------------------------------------------------------------------------
// Creator
// ------------------------------------------------------------------------------------------------------------

TopKGatherPluginCreator::TopKGatherPluginCreator()
{
    mFieldNames.emplace_back("k", nullptr, PluginFieldType::kINT32, 1);
    mFC.nbFields = static_cast<int32_t>(mFieldNames.size());
    mFC.fields = mFieldNames.data();
}

char const* TopKGatherPluginCreator::getPluginName() const noexcept
{
    return kPluginName;
}

char const* TopKGatherPluginCreator::getPluginVersion() const noexcept
{
    return kPluginVersion;
}

char const* TopKGatherPluginCreator::getPluginNamespace() const noexcept
{
    return kPluginNamespace;
}

PluginFieldCollection const* TopKGatherPluginCreator::getFieldNames() noexcept
{
    return &mFC;
}

namespace
{
//! Reads an integer field of any integer PluginFieldType; false if the type is not an integer or length != 1.
bool readIntField(PluginField const& f, int64_t& value)
{
    if (f.data == nullptr || f.length != 1)
    {
        return false;
    }
    switch (f.type)
    {
    case PluginFieldType::kINT32: value = *static_cast<int32_t const*>(f.data); return true;
    case PluginFieldType::kINT64: value = *static_cast<int64_t const*>(f.data); return true;
    case PluginFieldType::kINT16: value = *static_cast<int16_t const*>(f.data); return true;
    case PluginFieldType::kINT8: value = *static_cast<int8_t const*>(f.data); return true;
    default: return false;
    }
}
} // namespace

IPluginV3* TopKGatherPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::string const layer = name != nullptr ? std::string(" (layer '") + name + "')" : std::string();
        bool found = false;
        int64_t k = 0;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            if (f.name != nullptr && std::strcmp(f.name, "k") == 0)
            {
                if (!readIntField(f, k))
                {
                    reportError(who() + "attribute k must be a single integer (INT32)" + layer);
                    return nullptr;
                }
                found = true;
            }
            else
            {
                reportWarning(who() + "ignoring unknown attribute '" + (f.name != nullptr ? f.name : "(null)") + "'"
                    + layer);
            }
        }
        if (!found)
        {
            reportError(who() + "missing attribute k (int32, number of patch tokens to keep)" + layer);
            return nullptr;
        }
        if (k < 1 || k > dvit_topk_gather_max_n())
        {
            reportError(who() + "k=" + std::to_string(k) + " is out of range [1, "
                + std::to_string(dvit_topk_gather_max_n()) + "]" + layer);
            return nullptr;
        }
        return new TopKGatherPlugin(static_cast<int32_t>(k));
    }
    catch (std::exception const& e)
    {
        reportError(who() + "createPlugin failed: " + e.what());
    }
    return nullptr;
}

nvinfer1::IPluginCreatorV3One& topkGatherPluginCreator() noexcept
{
    static TopKGatherPluginCreator creator;
    return creator;
}

} // namespace trt
} // namespace dvit
