/*
 * dvit-edge plugins: the plugin library's entry points, and how TensorRT finds its creators. Shared by every op: the
 * creators are those of the op folders plugins/<op>Plugin/, listed by CMake in dvitPluginOps.inc (one
 * DVIT_PLUGIN_OP(<creator function>) line per op, from each folder's dvit_plugin_op(CREATOR ...)).
 *
 * Built twice (see plugins/CMakeLists.txt):
 *   libdvit_trt_plugins.so         (default) exports the plugin-library entry points TensorRT's
 *                                  IPluginRegistry::loadLibrary looks up: getCreators and setLoggerFinder. That is
 *                                  what `trtexec --dynamicPlugins=...`, `--setPluginsToSerialize=...` and Python's
 *                                  `trt.get_plugin_registry().load_library(path)` use. It does NOT register itself
 *                                  when loaded: loadLibrary refuses a library whose creators are already registered.
 *                                  After a plain ctypes.CDLL(path), call dvit_trt_register_plugins() instead.
 *   libdvit_trt_plugins_static.so  (DVIT_STATIC_REGISTRATION) registers the creators while it is being loaded, as
 *                                  REGISTER_TENSORRT_PLUGIN does, for `trtexec --staticPlugins=...` and
 *                                  ctypes.CDLL alone. It exports no getCreators, so loadLibrary rejects it cleanly.
 *
 * Neither variant links libnvinfer. getPluginRegistry/getLogger are looked up at run time with dlsym in every
 * TensorRT runtime already loaded in this process, by soname with RTLD_NOLOAD (never loading one):
 *   libnvinfer.so.<major>, libnvinfer_lean.so.<major>, libnvinfer_dispatch.so.<major>   (TensorRT, <major> = the
 *                           headers' NV_TENSORRT_MAJOR: the IPluginRegistry vtable differs between 10.x and 11.x)
 *   libtensorrt_rtx.so.1    (TensorRT for RTX; it ships no lean/dispatch runtime)
 * and, when none of those is loaded, in the global scope (an application linked with TensorRT statically). Python's
 * tensorrt and tensorrt_rtx modules load their libraries RTLD_LOCAL, which is why the global scope alone does not
 * do. The creators are registered with each distinct registry found.
 */
#include "dvitPluginApi.h"

#include "dvitLogging.h"
#include "dvitMacros.h"

#include <dlfcn.h>

#include <string>

// The op folders' creator functions (namespace dvit::trt), declared from the generated list.
#define DVIT_PLUGIN_OP(creator) nvinfer1::IPluginCreatorV3One& creator() noexcept;
namespace dvit
{
namespace trt
{
#include "dvitPluginOps.inc"
} // namespace trt
} // namespace dvit
#undef DVIT_PLUGIN_OP

namespace dvit
{
namespace trt
{

nvinfer1::IPluginCreatorV3One* const* pluginCreators(int32_t& nbCreators) noexcept
{
    static nvinfer1::IPluginCreatorV3One* const creators[] = {
#define DVIT_PLUGIN_OP(creator) &creator(),
#include "dvitPluginOps.inc"
#undef DVIT_PLUGIN_OP
    };
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

} // namespace trt
} // namespace dvit

namespace
{

using GetRegistryFn = nvinfer1::IPluginRegistry* (*) () noexcept;
using GetLoggerFn = nvinfer1::ILogger* (*) () noexcept;

struct Runtime
{
    char const* soname;
    //! Whether this build may call the runtime's IPluginRegistry (its vtable must match the headers').
    bool compatible;
    //! Whether its global logger (getLogger) shows our messages. TensorRT-RTX 1.7's does not (measured: an error
    //! logged to it reaches neither the application's logger nor stderr), so stderr is the better fallback there.
    bool useGlobalLogger;
};

//! TensorRT-RTX 1.7's IPluginRegistry has the TensorRT 11 layout (the deprecated IPluginCreator methods are gone):
//! a build against 10.x headers calling it lands in the wrong vtable slot and crashes (measured), while
//! IPluginRegistry::loadLibrary, which only calls into the plugin, works with every build.
constexpr bool kHeadersMatchRtxRegistry = NV_TENSORRT_MAJOR >= 11;

//! The runtimes looked for, by soname.
constexpr Runtime kRuntimes[] = {
    {"libnvinfer.so." DVIT_STR(NV_TENSORRT_MAJOR), true, true},
    {"libnvinfer_lean.so." DVIT_STR(NV_TENSORRT_MAJOR), true, true},
    {"libnvinfer_dispatch.so." DVIT_STR(NV_TENSORRT_MAJOR), true, true},
    {"libtensorrt_rtx.so.1", kHeadersMatchRtxRegistry, false},
};

std::string lookedFor()
{
    std::string names;
    for (Runtime const& r : kRuntimes)
    {
        names += std::string(names.empty() ? "" : ", ") + r.soname;
    }
    return names;
}

//! `symbol` in the already loaded library `soname`, or nullptr (RTLD_NOLOAD: never loads a second copy).
void* symbolInLoaded(char const* soname, char const* symbol)
{
    void* handle = dlopen(soname, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr)
    {
        dlerror();
        return nullptr;
    }
    void* p = dlsym(handle, symbol);
    dlclose(handle); // drops only the reference RTLD_NOLOAD added; the library stays loaded
    return p;
}

//! "dvit::DvitTopKGather v1": a creator as messages name it.
std::string creatorName(nvinfer1::IPluginCreatorV3One const& creator)
{
    return std::string(creator.getPluginNamespace()) + "::" + creator.getPluginName() + " v"
        + creator.getPluginVersion();
}

//! Registers every creator with `registry`; 0 when registered (or already there), else reports and returns non-zero.
int32_t registerWith(nvinfer1::IPluginRegistry* registry, char const* where)
{
    if (registry == nullptr)
    {
        dvit::trt::reportError(std::string("dvit plugins: getPluginRegistry() of ") + where + " returned null");
        return 2;
    }
    int32_t nbCreators = 0;
    nvinfer1::IPluginCreatorV3One* const* creators = dvit::trt::pluginCreators(nbCreators);
    for (int32_t i = 0; i < nbCreators; ++i)
    {
        nvinfer1::IPluginCreatorV3One& creator = *creators[i];
        if (registry->getCreator(creator.getPluginName(), creator.getPluginVersion(), creator.getPluginNamespace())
            != nullptr)
        {
            continue; // already registered (a second call, or the library was also loaded through loadLibrary)
        }
        if (!registry->registerCreator(creator, creator.getPluginNamespace()))
        {
            dvit::trt::reportError(
                "dvit plugins: IPluginRegistry::registerCreator of " + std::string(where) + " failed for "
                + creatorName(creator));
            return 3;
        }
    }
    return 0;
}

int32_t registerWithRegistries()
{
    nvinfer1::IPluginRegistry* done[sizeof(kRuntimes) / sizeof(kRuntimes[0]) + 1] = {};
    int32_t nbDone = 0;
    int32_t failure = 0;
    std::string incompatible;
    bool loggerSet = false;
    auto visit = [&](GetRegistryFn getRegistry, GetLoggerFn getLogger, bool useGlobalLogger, char const* where) {
        nvinfer1::IPluginRegistry* registry = getRegistry();
        for (int32_t i = 0; i < nbDone; ++i)
        {
            if (done[i] == registry)
            {
                return; // the same runtime reached under a second name
            }
        }
        int32_t const rc = registerWith(registry, where);
        if (rc != 0)
        {
            failure = rc;
            return;
        }
        done[nbDone++] = registry;
        if (!loggerSet && useGlobalLogger && getLogger != nullptr)
        {
            dvit::trt::setFallbackLogger(getLogger());
            loggerSet = true;
        }
    };
    for (Runtime const& r : kRuntimes)
    {
        auto const getRegistry = reinterpret_cast<GetRegistryFn>(symbolInLoaded(r.soname, "getPluginRegistry"));
        if (getRegistry == nullptr)
        {
            continue;
        }
        if (!r.compatible)
        {
            incompatible = std::string("dvit plugins: ") + r.soname + " is loaded, but this library was "
                "built against the TensorRT " DVIT_STR(NV_TENSORRT_MAJOR) " headers, whose IPluginRegistry layout "
                "differs from its registry's (calling it would crash): load the library with "
                "IPluginRegistry::loadLibrary (trt.get_plugin_registry().load_library) instead, or build it against "
                "TensorRT >= 11 headers";
            continue;
        }
        visit(getRegistry, reinterpret_cast<GetLoggerFn>(symbolInLoaded(r.soname, "getLogger")), r.useGlobalLogger,
            r.soname);
    }
    if (nbDone == 0 && failure == 0 && incompatible.empty())
    {
        dlerror();
        if (auto const getRegistry = reinterpret_cast<GetRegistryFn>(dlsym(RTLD_DEFAULT, "getPluginRegistry")))
        {
            visit(getRegistry, reinterpret_cast<GetLoggerFn>(dlsym(RTLD_DEFAULT, "getLogger")), true,
                "the global scope");
        }
    }
    if (nbDone > 0)
    {
        if (!incompatible.empty())
        {
            dvit::trt::reportWarning(incompatible + " (registered with the other TensorRT runtime)");
        }
        return 0;
    }
    if (!incompatible.empty())
    {
        dvit::trt::reportError(incompatible);
        return 5;
    }
    if (failure == 0)
    {
        dvit::trt::reportError("dvit plugins: TensorRT is not loaded in this process (looked for "
            + lookedFor() + " and getPluginRegistry in the global scope), so there is no plugin registry to "
              "register with: import tensorrt or tensorrt_rtx (or link the TensorRT library) first, or load this "
              "library with IPluginRegistry::loadLibrary");
        return 1;
    }
    return failure;
}

} // namespace

extern "C" {

DVIT_EXPORT int32_t dvit_trt_register_plugins(void)
{
    try
    {
        return registerWithRegistries();
    }
    catch (...)
    {
        return 4;
    }
}

DVIT_EXPORT char const* dvit_trt_plugin_last_error(void)
{
    static thread_local std::string copy;
    copy = dvit::trt::lastError();
    return copy.c_str();
}

#if !defined(DVIT_STATIC_REGISTRATION)

DVIT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    // The same creators as pluginCreators(), as the base interface TensorRT takes (a pointer conversion).
    static nvinfer1::IPluginCreatorInterface* const creators[] = {
#define DVIT_PLUGIN_OP(creator) &dvit::trt::creator(),
#include "dvitPluginOps.inc"
#undef DVIT_PLUGIN_OP
    };
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

DVIT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    dvit::trt::setLoggerFinder(finder);
}

#endif

} // extern "C"

#if defined(DVIT_STATIC_REGISTRATION)
namespace
{
//! Load-time registration, the effect of REGISTER_TENSORRT_PLUGIN without its link-time need for libnvinfer.
struct StaticRegistrar
{
    StaticRegistrar()
    {
        // On failure registerWithRegistries() has reported why; dvit_trt_register_plugins() can be called later.
        static_cast<void>(registerWithRegistries());
    }
};
StaticRegistrar const gStaticRegistrar{};
} // namespace
#endif
