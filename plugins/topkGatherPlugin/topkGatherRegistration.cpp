/*
 * dvit-edge: how TensorRT finds the DvitTopKGather creator.
 *
 * Built twice (see plugins/CMakeLists.txt):
 *   libdvit_trt_plugins.so         (default) exports the plugin-library entry points TensorRT's
 *                                  IPluginRegistry::loadLibrary looks up: getCreators and setLoggerFinder. That is
 *                                  what `trtexec --dynamicPlugins=...`, `--setPluginsToSerialize=...` and Python's
 *                                  `trt.get_plugin_registry().load_library(path)` use. It does NOT register itself
 *                                  when loaded: loadLibrary refuses a library whose creators are already registered.
 *                                  After a plain ctypes.CDLL(path), call dvit_trt_register_plugins() instead.
 *   libdvit_trt_plugins_static.so  (DVIT_STATIC_REGISTRATION) registers the creator while it is being loaded, as
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
 * do. The creator is registered with each distinct registry found.
 */
#include "topkGatherPlugin.h"

#include "topkGatherKernel.h"

#include <dlfcn.h>

#include <string>

namespace
{

#define DVIT_STR2(x) #x
#define DVIT_STR(x) DVIT_STR2(x)

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

//! Registers the creator with `registry`; 0 when registered (or already there), else reports and returns non-zero.
int32_t registerWith(nvinfer1::IPluginRegistry* registry, char const* where)
{
    using dvit::trt::kPluginName;
    using dvit::trt::kPluginNamespace;
    using dvit::trt::kPluginVersion;
    if (registry == nullptr)
    {
        dvit::trt::reportError(std::string("dvit::DvitTopKGather: getPluginRegistry() of ") + where + " returned null");
        return 2;
    }
    if (registry->getCreator(kPluginName, kPluginVersion, kPluginNamespace) != nullptr)
    {
        return 0; // already registered (a second call, or the library was also loaded through loadLibrary)
    }
    if (!registry->registerCreator(dvit::trt::pluginCreator(), kPluginNamespace))
    {
        dvit::trt::reportError(std::string("dvit::DvitTopKGather: IPluginRegistry::registerCreator of ") + where
            + " failed");
        return 3;
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
            incompatible = std::string("dvit::DvitTopKGather: ") + r.soname + " is loaded, but this library was "
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
        dvit::trt::reportError("dvit::DvitTopKGather: TensorRT is not loaded in this process (looked for "
            + lookedFor() + " and getPluginRegistry in the global scope), so there is no plugin registry to "
              "register with: import tensorrt or tensorrt_rtx (or link the TensorRT library) first, or load this "
              "library with IPluginRegistry::loadLibrary");
        return 1;
    }
    return failure;
}

} // namespace

extern "C" {

//! Registers the creator (name "DvitTopKGather", version "1", namespace "dvit") with the global plugin registry of
//! every TensorRT runtime loaded in this process (libnvinfer, its lean/dispatch runtimes, TensorRT-RTX). Returns 0
//! when registered with at least one (or already registered), non-zero otherwise (message in
//! dvit_trt_plugin_last_error()). Safe to call more than once.
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

//! The most recent error the plugin library reported ("" if none).
DVIT_EXPORT char const* dvit_trt_plugin_last_error(void)
{
    static thread_local std::string copy;
    copy = dvit::trt::lastError();
    return copy.c_str();
}

#if !defined(DVIT_STATIC_REGISTRATION)

//! Plugin-library entry point (TensorRT >= 10): the creators this library provides.
DVIT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&dvit::trt::pluginCreator()};
    nbCreators = 1;
    return creators;
}

//! Plugin-library entry point: the logger finder TensorRT passes when it loads the library.
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
        // On failure registerWithRegistry() has reported why; dvit_trt_register_plugins() can be called later.
        static_cast<void>(registerWithRegistries());
    }
};
StaticRegistrar const gStaticRegistrar{};
} // namespace
#endif
