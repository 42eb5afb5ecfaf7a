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
 * Neither variant links libnvinfer: getPluginRegistry/getLogger are looked up at run time with dlsym, first in the
 * global scope (trtexec, C++ applications linked with libnvinfer), then in an already loaded libnvinfer.so.<major>
 * (Python's tensorrt module loads it RTLD_LOCAL, so it is not in the global scope).
 */
#include "topkGatherPlugin.h"

#include "topkGatherKernel.h"

#include <dlfcn.h>

#include <string>

namespace
{

#define DVIT_STR2(x) #x
#define DVIT_STR(x) DVIT_STR2(x)

//! Finds an exported libnvinfer function without linking against libnvinfer.
void* findNvinferSymbol(char const* symbol)
{
    dlerror();
    if (void* p = dlsym(RTLD_DEFAULT, symbol))
    {
        return p;
    }
    char const* const libs[] = {"libnvinfer.so." DVIT_STR(NV_TENSORRT_MAJOR), "libnvinfer.so"};
    for (char const* lib : libs)
    {
        // RTLD_NOLOAD: only a library that is already loaded; never loads a second copy.
        if (void* handle = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD))
        {
            void* p = dlsym(handle, symbol);
            dlclose(handle); // drops only the reference RTLD_NOLOAD added; the library stays loaded
            if (p != nullptr)
            {
                return p;
            }
        }
    }
    return nullptr;
}

int32_t registerWithRegistry()
{
    using dvit::trt::kPluginName;
    using dvit::trt::kPluginNamespace;
    using dvit::trt::kPluginVersion;
    using GetRegistryFn = nvinfer1::IPluginRegistry* (*) () noexcept;
    using GetLoggerFn = nvinfer1::ILogger* (*) () noexcept;

    auto const getRegistry = reinterpret_cast<GetRegistryFn>(findNvinferSymbol("getPluginRegistry"));
    if (getRegistry == nullptr)
    {
        dvit::trt::reportError(std::string("dvit::DvitTopKGather: libnvinfer.so." DVIT_STR(NV_TENSORRT_MAJOR))
            + " is not loaded in this process, so there is no plugin registry to register with: import tensorrt "
              "(or link libnvinfer) first, or load this library with IPluginRegistry::loadLibrary");
        return 1;
    }
    if (auto const getLogger = reinterpret_cast<GetLoggerFn>(findNvinferSymbol("getLogger")))
    {
        dvit::trt::setFallbackLogger(getLogger());
    }
    nvinfer1::IPluginRegistry* registry = getRegistry();
    if (registry == nullptr)
    {
        dvit::trt::reportError("dvit::DvitTopKGather: getPluginRegistry() returned null");
        return 2;
    }
    if (registry->getCreator(kPluginName, kPluginVersion, kPluginNamespace) != nullptr)
    {
        return 0; // already registered (a second call, or the library was also loaded through loadLibrary)
    }
    if (!registry->registerCreator(dvit::trt::pluginCreator(), kPluginNamespace))
    {
        dvit::trt::reportError("dvit::DvitTopKGather: IPluginRegistry::registerCreator failed");
        return 3;
    }
    return 0;
}

} // namespace

extern "C" {

//! Registers the creator (name "DvitTopKGather", version "1", namespace "dvit") with libnvinfer's global plugin
//! registry. Returns 0 when registered (or already registered), non-zero otherwise (message in
//! dvit_trt_plugin_last_error()). Safe to call more than once.
DVIT_EXPORT int32_t dvit_trt_register_plugins(void)
{
    try
    {
        return registerWithRegistry();
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
        static_cast<void>(registerWithRegistry());
    }
};
StaticRegistrar const gStaticRegistrar{};
} // namespace
#endif
