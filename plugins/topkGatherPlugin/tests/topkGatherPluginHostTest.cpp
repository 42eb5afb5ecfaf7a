/*
 * dvit-edge: CPU-only test of the DvitTopKGather plugin's build-time contract, without libnvinfer and without a GPU.
 *
 * TensorRT's IExprBuilder / IDimensionExpr forward to implementation objects (apiv::VExprBuilder,
 * apiv::VDimensionExpr); this test supplies small fakes of those, a capturing ILogger/ILoggerFinder and an
 * IErrorRecorder, then drives the plugin the way the builder does: createPlugin, getOutputDataTypes,
 * getOutputShapes, supportsFormatCombination, configurePlugin, onShapeChange, enqueue (error paths only: every
 * failure here is detected before any CUDA call), serialisation and clone. Exit code 0 and "OK" when all hold.
 */
#include "dvitPluginApi.h" // the library entry points (plugins/api/): getCreators, dvit_trt_register_plugins
#include "topkGatherKernel.h"
#include "topkGatherPlugin.h"

#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

using namespace nvinfer1;
using dvit::trt::TopKGatherPlugin;
using dvit::trt::TopKGatherPluginCreator;

namespace
{

int gFailures = 0;
int gChecks = 0;

#define CHECK(cond, ...)                                                                                               \
    do                                                                                                                 \
    {                                                                                                                  \
        ++gChecks;                                                                                                     \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                                                \
            std::printf(__VA_ARGS__);                                                                                  \
            std::printf("\n");                                                                                         \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

// ---- fakes of TensorRT's implementation side --------------------------------------------------------------------

class FakeDimImpl : public apiv::VDimensionExpr
{
public:
    FakeDimImpl(bool constant, int64_t value)
        : mConstant(constant)
        , mValue(value)
    {
    }
    bool isConstant() const override
    {
        return mConstant;
    }
    int64_t getConstantValue() const override
    {
        return mConstant ? mValue : INT64_MIN;
    }
    bool isSizeTensor() const override
    {
        return false;
    }

private:
    bool mConstant;
    int64_t mValue;
};

class FakeDim : public IDimensionExpr
{
public:
    explicit FakeDim(apiv::VDimensionExpr* impl)
    {
        mImpl = impl;
    }
};

class FakeBuilderImpl : public apiv::VExprBuilder
{
public:
    IDimensionExpr const* constant(int64_t value) override
    {
        return make(true, value);
    }
    IDimensionExpr const* operation(DimensionOperation, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return make(false, 0);
    }
    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return make(false, 0);
    }
    //! A dimension known at build time (value) or only at run time (value < 0).
    IDimensionExpr const* dim(int64_t value)
    {
        return value >= 0 ? make(true, value) : make(false, 0);
    }

private:
    IDimensionExpr const* make(bool constant, int64_t value)
    {
        mImpls.emplace_back(new FakeDimImpl(constant, value));
        mDims.emplace_back(new FakeDim(mImpls.back().get()));
        return mDims.back().get();
    }
    std::deque<std::unique_ptr<FakeDimImpl>> mImpls;
    std::deque<std::unique_ptr<FakeDim>> mDims;
};

class FakeBuilder : public IExprBuilder
{
public:
    explicit FakeBuilder(apiv::VExprBuilder* impl)
    {
        mImpl = impl;
    }
};

class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            messages.emplace_back(msg);
        }
    }
    std::vector<std::string> messages;
};

class FakeLoggerFinder : public ILoggerFinder
{
public:
    explicit FakeLoggerFinder(ILogger* logger)
        : mLogger(logger)
    {
    }
    ILogger* findLogger() override
    {
        return mLogger;
    }

private:
    ILogger* mLogger;
};

class FakeRecorder : public IErrorRecorder
{
public:
    int32_t getNbErrors() const noexcept override
    {
        return static_cast<int32_t>(errors.size());
    }
    ErrorCode getErrorCode(int32_t) const noexcept override
    {
        return ErrorCode::kINVALID_ARGUMENT;
    }
    ErrorDesc getErrorDesc(int32_t i) const noexcept override
    {
        return errors.at(static_cast<size_t>(i)).c_str();
    }
    bool hasOverflowed() const noexcept override
    {
        return false;
    }
    void clear() noexcept override
    {
        errors.clear();
    }
    bool reportError(ErrorCode, ErrorDesc desc) noexcept override
    {
        errors.emplace_back(desc);
        return true;
    }
    RefCount incRefCount() noexcept override
    {
        return 1;
    }
    RefCount decRefCount() noexcept override
    {
        return 0;
    }
    std::vector<std::string> errors;
};

class FakeResourceContext : public IPluginResourceContext
{
public:
    explicit FakeResourceContext(IErrorRecorder* recorder)
        : mRecorder(recorder)
    {
    }
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }
    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return mRecorder;
    }

private:
    IErrorRecorder* mRecorder;
};

// ---- helpers ------------------------------------------------------------------------------------------------------

CapturingLogger gLogger;
FakeLoggerFinder gFinder(&gLogger);

bool lastLogContains(char const* needle)
{
    return !gLogger.messages.empty() && gLogger.messages.back().find(needle) != std::string::npos;
}

std::unique_ptr<IPluginV3> create(TopKGatherPluginCreator& creator, PluginField const* fields, int32_t n,
    TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    PluginFieldCollection fc{n, fields};
    return std::unique_ptr<IPluginV3>(creator.createPlugin("topk_gather_0", &fc, phase));
}

Dims dims(std::initializer_list<int64_t> v)
{
    Dims d{};
    d.nbDims = static_cast<int32_t>(v.size());
    int32_t i = 0;
    for (int64_t x : v)
    {
        d.d[i++] = x;
    }
    return d;
}

DynamicPluginTensorDesc desc(DataType type, Dims const& mn, Dims const& mx, TensorFormat format = TensorFormat::kLINEAR)
{
    DynamicPluginTensorDesc d{};
    d.desc.type = type;
    d.desc.format = format;
    d.desc.dims = mn;
    d.min = mn;
    d.opt = mx;
    d.max = mx;
    return d;
}

struct ShapeResult
{
    int32_t status;
    DimsExprs out[2];
};

//! getOutputShapes on scores [b, n] and tokens [tb, tn, c]; a negative size is a run-time (non-constant) dim.
ShapeResult shapes(TopKGatherPlugin& p, FakeBuilderImpl& impl, int64_t b, int64_t n, int64_t tb, int64_t tn,
    int64_t c, int32_t rankScores = 2)
{
    FakeBuilder builder(&impl);
    DimsExprs in[2]{};
    in[0].nbDims = rankScores;
    in[0].d[0] = impl.dim(b);
    in[0].d[1] = impl.dim(n);
    in[0].d[2] = impl.dim(1);
    in[1].nbDims = 3;
    in[1].d[0] = impl.dim(tb);
    in[1].d[1] = impl.dim(tn);
    in[1].d[2] = impl.dim(c);
    ShapeResult r{};
    r.status = p.getOutputShapes(in, 2, nullptr, 0, r.out, 2, builder);
    return r;
}

int64_t constOf(IDimensionExpr const* e)
{
    return e != nullptr && e->isConstant() ? e->getConstantValue() : -1;
}

} // namespace

int main()
{
    dvit::trt::setLoggerFinder(&gFinder);
    TopKGatherPluginCreator creator;

    // ---- creator ----
    CHECK(std::strcmp(creator.getPluginName(), "DvitTopKGather") == 0, "name");
    CHECK(std::strcmp(creator.getPluginVersion(), "1") == 0, "version");
    CHECK(std::strcmp(creator.getPluginNamespace(), "dvit") == 0, "namespace");
    PluginFieldCollection const* names = creator.getFieldNames();
    CHECK(names != nullptr && names->nbFields == 1 && std::strcmp(names->fields[0].name, "k") == 0
            && names->fields[0].type == PluginFieldType::kINT32,
        "field names: k as INT32");

    int32_t const k137 = 137;
    int64_t const k64 = 137;
    int32_t const kZero = 0;
    int32_t const kHuge = 5000;
    float const kFloat = 137.0f;
    PluginField const fK32("k", &k137, PluginFieldType::kINT32, 1);
    PluginField const fK64("k", &k64, PluginFieldType::kINT64, 1);
    PluginField const fZero("k", &kZero, PluginFieldType::kINT32, 1);
    PluginField const fHuge("k", &kHuge, PluginFieldType::kINT32, 1);
    PluginField const fFloat("k", &kFloat, PluginFieldType::kFLOAT32, 1);

    CHECK(create(creator, &fK32, 1) != nullptr, "k=137 INT32 accepted");
    CHECK(create(creator, &fK64, 1) != nullptr, "k=137 INT64 accepted");
    CHECK(create(creator, nullptr, 0) == nullptr && lastLogContains("missing attribute k"), "missing k refused");
    CHECK(create(creator, &fZero, 1) == nullptr && lastLogContains("k=0"), "k=0 refused");
    CHECK(create(creator, &fHuge, 1) == nullptr && lastLogContains("k=5000"), "k=5000 refused");
    CHECK(create(creator, &fFloat, 1) == nullptr && lastLogContains("single integer"), "float k refused");
    CHECK(std::string(dvit_trt_plugin_last_error()).find("single integer") != std::string::npos,
        "last error kept: '%s'", dvit_trt_plugin_last_error());

    std::unique_ptr<IPluginV3> owner = create(creator, &fK32, 1);
    auto* plugin = dynamic_cast<TopKGatherPlugin*>(owner.get());
    CHECK(plugin != nullptr && plugin->k() == 137, "plugin k");
    if (plugin == nullptr)
    {
        std::printf("FAILED\n");
        return 1;
    }

    // ---- capabilities, identity ----
    auto* core = static_cast<IPluginV3OneCore*>(plugin->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(plugin->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* runtime = static_cast<IPluginV3OneRuntime*>(plugin->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(core != nullptr && build != nullptr && runtime != nullptr, "capabilities");
    CHECK(core != nullptr && std::strcmp(core->getPluginName(), "DvitTopKGather") == 0
            && std::strcmp(core->getPluginNamespace(), "dvit") == 0 && std::strcmp(core->getPluginVersion(), "1") == 0,
        "core identity");
    CHECK(build != nullptr && build->getNbOutputs() == 2, "two outputs");

    // ---- output types ----
    DataType outT[2];
    DataType const ff[2] = {DataType::kFLOAT, DataType::kFLOAT};
    DataType const fh[2] = {DataType::kFLOAT, DataType::kHALF};
    DataType const i8[2] = {DataType::kINT8, DataType::kFLOAT};
    DataType const ti32[2] = {DataType::kHALF, DataType::kINT32};
    CHECK(plugin->getOutputDataTypes(outT, 2, ff, 2) == 0 && outT[0] == DataType::kFLOAT && outT[1] == DataType::kINT32,
        "types f32");
    CHECK(plugin->getOutputDataTypes(outT, 2, fh, 2) == 0 && outT[0] == DataType::kHALF && outT[1] == DataType::kINT32,
        "types mixed");
    CHECK(plugin->getOutputDataTypes(outT, 2, i8, 2) != 0 && lastLogContains("INT8"), "INT8 scores refused");
    CHECK(plugin->getOutputDataTypes(outT, 2, ti32, 2) != 0 && lastLogContains("tokens"), "INT32 tokens refused");
    CHECK(plugin->getOutputDataTypes(outT, 2, ff, 1) != 0, "one input refused");

    // ---- output shapes ----
    {
        FakeBuilderImpl impl;
        ShapeResult r = shapes(*plugin, impl, 8, 196, 8, 197, 384);
        CHECK(r.status == 0, "static DeiT-S shapes accepted");
        CHECK(r.out[0].nbDims == 3 && constOf(r.out[0].d[0]) == 8 && constOf(r.out[0].d[1]) == 138
                && constOf(r.out[0].d[2]) == 384,
            "kept_tokens [8, 138, 384]");
        CHECK(r.out[1].nbDims == 2 && constOf(r.out[1].d[0]) == 8 && constOf(r.out[1].d[1]) == 137,
            "kept_indices [8, 137]");

        r = shapes(*plugin, impl, -1, 196, -1, 197, 384);
        CHECK(r.status == 0 && !r.out[0].d[0]->isConstant() && constOf(r.out[0].d[1]) == 138, "dynamic batch");
        r = shapes(*plugin, impl, -1, -1, -1, -1, -1);
        CHECK(r.status == 0 && constOf(r.out[1].d[1]) == 137, "fully dynamic input: checks deferred");

        CHECK(shapes(*plugin, impl, 8, 100, 8, 101, 384).status != 0 && lastLogContains("k=137"), "k > N refused");
        CHECK(shapes(*plugin, impl, 8, 196, 8, 196, 384).status != 0 && lastLogContains("N+1"), "tokens dim1 != N+1");
        CHECK(shapes(*plugin, impl, 8, 196, 4, 197, 384).status != 0 && lastLogContains("batch mismatch"),
            "batch mismatch");
        CHECK(shapes(*plugin, impl, 0, 196, 0, 197, 384).status != 0 && lastLogContains("zero-sized"), "B = 0");
        CHECK(shapes(*plugin, impl, 8, 196, 8, 197, 0).status != 0 && lastLogContains("zero-sized"), "C = 0");
        CHECK(shapes(*plugin, impl, 8, 5000, 8, 5001, 384).status != 0 && lastLogContains("maximum"), "N > 4096");
        CHECK(shapes(*plugin, impl, -1, -1, -1, 100, 384).status != 0 && lastLogContains("k=137"),
            "k > N known only from tokens");
        CHECK(shapes(*plugin, impl, 8, 196, 8, 197, 384, 3).status != 0 && lastLogContains("ranks"), "scores rank 3");
    }

    // ---- formats ----
    {
        Dims const s = dims({8, 196});
        Dims const t = dims({8, 197, 384});
        Dims const o = dims({8, 138, 384});
        Dims const i = dims({8, 137});
        DynamicPluginTensorDesc io[4] = {desc(DataType::kFLOAT, s, s), desc(DataType::kHALF, t, t),
            desc(DataType::kHALF, o, o), desc(DataType::kINT32, i, i)};
        CHECK(plugin->supportsFormatCombination(0, io, 2, 2), "scores FP32 linear");
        CHECK(plugin->supportsFormatCombination(1, io, 2, 2), "tokens FP16 linear");
        CHECK(plugin->supportsFormatCombination(2, io, 2, 2), "out FP16 = tokens");
        CHECK(plugin->supportsFormatCombination(3, io, 2, 2), "indices INT32");
        io[2].desc.type = DataType::kFLOAT;
        CHECK(!plugin->supportsFormatCombination(2, io, 2, 2), "out type must equal tokens type");
        io[2].desc.type = DataType::kHALF;
        io[3].desc.type = DataType::kINT64;
        CHECK(!plugin->supportsFormatCombination(3, io, 2, 2), "indices INT64 refused");
        io[3].desc.type = DataType::kINT32;
        for (DataType bad : {DataType::kINT8, DataType::kINT32, DataType::kBF16, DataType::kFP8, DataType::kBOOL})
        {
            io[1].desc.type = bad;
            CHECK(!plugin->supportsFormatCombination(1, io, 2, 2), "tokens type %d refused", static_cast<int>(bad));
        }
        io[1].desc.type = DataType::kHALF;
        io[1].desc.format = TensorFormat::kCHW32;
        CHECK(!plugin->supportsFormatCombination(1, io, 2, 2), "vectorised format refused");
        io[1].desc.format = TensorFormat::kLINEAR;
        CHECK(!plugin->supportsFormatCombination(4, io, 2, 2), "pos out of range");
    }

    // ---- configurePlugin with profile bounds ----
    {
        auto cfg = [&](Dims smin, Dims smax, Dims tmin, Dims tmax, DataType st = DataType::kFLOAT,
                       DataType tt = DataType::kFLOAT) {
            DynamicPluginTensorDesc in[2] = {desc(st, smin, smax), desc(tt, tmin, tmax)};
            DynamicPluginTensorDesc out[2] = {
                desc(tt, dims({1, 138, 384}), dims({1, 138, 384})), desc(DataType::kINT32, dims({1, 137}), dims({1, 137}))};
            return plugin->configurePlugin(in, 2, out, 2);
        };
        CHECK(cfg(dims({1, 196}), dims({64, 196}), dims({1, 197, 384}), dims({64, 197, 384})) == 0, "profile ok");
        CHECK(cfg(dims({1, 196}), dims({64, 196}), dims({1, 197, 384}), dims({64, 197, 384}), DataType::kHALF,
                  DataType::kHALF)
                == 0,
            "profile ok fp16");
        CHECK(cfg(dims({1, 100}), dims({1, 196}), dims({1, 101, 384}), dims({1, 197, 384})) != 0
                && lastLogContains("k=137"),
            "profile min N < k refused");
        CHECK(cfg(dims({1, 196}), dims({64, 196}), dims({1, 197, 384}), dims({32, 197, 384})) != 0
                && lastLogContains("batch mismatch"),
            "profile batch mismatch refused");
        CHECK(cfg(dims({1, 196}), dims({1, 196}), dims({1, 198, 384}), dims({1, 198, 384})) != 0
                && lastLogContains("N+1"),
            "profile tokens dim mismatch refused");
        CHECK(cfg(dims({1, 4097}), dims({1, 4097}), dims({1, 4098, 8}), dims({1, 4098, 8})) != 0
                && lastLogContains("maximum"),
            "profile N over the maximum refused");
        CHECK(cfg(dims({1, 196}), dims({1, 196}), dims({1, 197, 384}), dims({1, 197, 384}), DataType::kINT8) != 0
                && lastLogContains("INT8"),
            "INT8 refused in configurePlugin");
    }

    // ---- runtime checks (no CUDA call is reached on these paths) ----
    {
        FakeRecorder recorder;
        FakeResourceContext context(&recorder);
        std::unique_ptr<IPluginV3> attached(plugin->attachToContext(&context));
        auto* rt = dynamic_cast<TopKGatherPlugin*>(attached.get());
        CHECK(rt != nullptr && rt->k() == 137, "attachToContext clones");
        if (rt != nullptr)
        {
            PluginTensorDesc in[2]{};
            PluginTensorDesc out[2]{};
            in[0].type = DataType::kFLOAT;
            in[1].type = DataType::kFLOAT;
            in[0].dims = dims({2, 196});
            in[1].dims = dims({2, 197, 384});
            out[0].type = DataType::kFLOAT;
            out[1].type = DataType::kINT32;
            out[0].dims = dims({2, 138, 384});
            out[1].dims = dims({2, 137});
            CHECK(rt->onShapeChange(in, 2, out, 2) == 0, "onShapeChange ok");
            in[1].dims = dims({3, 197, 384});
            CHECK(rt->onShapeChange(in, 2, out, 2) != 0 && !recorder.errors.empty()
                    && recorder.errors.back().find("batch mismatch") != std::string::npos,
                "onShapeChange batch mismatch reaches the error recorder");
            void const* inputs[2] = {nullptr, nullptr};
            void* outputs[2] = {nullptr, nullptr};
            CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0, "enqueue with bad shapes fails");
            in[1].dims = dims({2, 197, 384});
            CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0
                    && recorder.errors.back().find("null device pointer") != std::string::npos,
                "enqueue with null buffers fails cleanly: %s",
                recorder.errors.empty() ? "" : recorder.errors.back().c_str());
            in[0].dims = dims({2, 100});
            in[1].dims = dims({2, 101, 384});
            CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0
                    && recorder.errors.back().find("k=137") != std::string::npos
                    && recorder.errors.back().find("(scores [2, 100], tokens [2, 101, 384])") != std::string::npos,
                "enqueue with k > N fails cleanly, naming the shapes: %s",
                recorder.errors.empty() ? "" : recorder.errors.back().c_str());
            // The structural checks enqueue does itself (no strings unless they fail).
            in[0].dims = dims({2, 196, 1});
            in[1].dims = dims({2, 197, 384});
            CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0
                    && recorder.errors.back().find("enqueue: scores must be [B, N]") != std::string::npos,
                "enqueue with 3-D scores fails: %s", recorder.errors.empty() ? "" : recorder.errors.back().c_str());
            in[0].dims = dims({2, 196});
            in[1].dims = dims({2, 197, 0});
            CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0
                    && recorder.errors.back().find("zero-sized") != std::string::npos,
                "enqueue with C = 0 fails");
            in[1].dims = dims({2, 196, 384});
            CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0
                    && recorder.errors.back().find("N+1") != std::string::npos,
                "enqueue with tokens dim 1 != N+1 fails");
            in[0].type = DataType::kINT8;
            in[1].dims = dims({2, 197, 384});
            CHECK(rt->enqueue(in, out, inputs, outputs, nullptr, nullptr) != 0
                    && recorder.errors.back().find("scores dtype") != std::string::npos,
                "enqueue with INT8 scores fails in the launcher's single validation");
        }
    }

    // ---- serialisation round trip, clone ----
    {
        PluginFieldCollection const* fc = plugin->getFieldsToSerialize();
        CHECK(fc != nullptr && fc->nbFields == 1 && std::strcmp(fc->fields[0].name, "k") == 0
                && fc->fields[0].type == PluginFieldType::kINT32
                && *static_cast<int32_t const*>(fc->fields[0].data) == 137,
            "serialised k");
        std::unique_ptr<IPluginV3> restored(creator.createPlugin("r", fc, TensorRTPhase::kRUNTIME));
        auto* r = dynamic_cast<TopKGatherPlugin*>(restored.get());
        CHECK(r != nullptr && r->k() == 137, "deserialised k");
        std::unique_ptr<IPluginV3> cloned(plugin->clone());
        auto* c = dynamic_cast<TopKGatherPlugin*>(cloned.get());
        CHECK(c != nullptr && c->k() == 137 && c != plugin, "clone");
        if (c != nullptr)
        {
            PluginFieldCollection const* fc2 = c->getFieldsToSerialize();
            CHECK(fc2 != nullptr && fc2->fields != fc->fields && *static_cast<int32_t const*>(fc2->fields[0].data) == 137,
                "clone serialises its own fields");
        }
    }

    // ---- library entry points ----
#if !defined(DVIT_STATIC_REGISTRATION)
    {
        int32_t nb = 0;
        IPluginCreatorInterface* const* list = getCreators(nb);
        CHECK(nb >= 1 && list != nullptr, "getCreators returns the library's creators (%d)", nb);
        // One creator per op folder; this op's is among them, as a V3 creator.
        IPluginCreatorInterface* ours = nullptr;
        for (int32_t i = 0; list != nullptr && i < nb; ++i)
        {
            auto* v3 = dynamic_cast<IPluginCreatorV3One*>(list[i]);
            CHECK(v3 != nullptr, "getCreators[%d]: V3 creator", i);
            if (v3 != nullptr && std::strcmp(v3->getPluginName(), "DvitTopKGather") == 0)
            {
                ours = list[i];
            }
        }
        CHECK(ours != nullptr, "getCreators lists DvitTopKGather");
        CHECK(ours != nullptr && std::strcmp(ours->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") == 0,
            "creator interface kind");
    }
#endif
    // No TensorRT in this process: explicit registration must fail cleanly with a message naming where it looked.
    CHECK(dvit_trt_register_plugins() == 1
            && std::string(dvit_trt_plugin_last_error()).find("not loaded") != std::string::npos
            && std::string(dvit_trt_plugin_last_error()).find("libtensorrt_rtx.so.1") != std::string::npos,
        "register without TensorRT: '%s'", dvit_trt_plugin_last_error());

    std::printf("dvit_trt_plugin_host_test (TensorRT %d.%d headers): %d checks, %d failures\n", NV_TENSORRT_MAJOR,
        NV_TENSORRT_MINOR, gChecks, gFailures);
    if (gFailures != 0)
    {
        std::printf("FAILED\n");
        return 1;
    }
    std::printf("OK\n");
    return 0;
}
