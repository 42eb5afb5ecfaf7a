/*
 * dvit-edge plugins: the library's logging (see dvitLogging.h). Shared by every op of the plugin library.
 */
#include "dvitLogging.h"

#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

using nvinfer1::ILogger;

namespace dvit
{
namespace trt
{

namespace
{
// Shared state lives in function-local statics, never in namespace-scope objects with dynamic initialisation: the
// load-time registrar (plugins/api/dvitPluginApi.cpp, another translation unit) may report an error before this
// file's globals would have been constructed. The atomics below have constexpr constructors (constant initialisation,
// done before any code runs), so they may stay global.
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};
std::atomic<ILogger*> gFallbackLogger{nullptr};

struct LastError
{
    std::mutex mutex;
    std::string message;
};

//! Created on first use and deliberately never destroyed, so that an error reported while other static objects
//! are being destroyed (process exit, library unload) still finds it alive.
LastError& lastErrorState()
{
    static LastError* const state = new LastError();
    return *state;
}

void emit(ILogger::Severity severity, std::string const& message) noexcept
{
    ILogger* logger = nullptr;
    if (nvinfer1::ILoggerFinder* finder = gLoggerFinder.load())
    {
        logger = finder->findLogger();
    }
    if (logger == nullptr)
    {
        logger = gFallbackLogger.load();
    }
    if (logger != nullptr)
    {
        logger->log(severity, message.c_str());
    }
    else
    {
        std::fprintf(stderr, "[%s] %s\n", severity == ILogger::Severity::kWARNING ? "W" : "E", message.c_str());
    }
}

//! The ILoggerFinder layout of the library that implements `finder`: 11 (TensorRT >= 11 and TensorRT-RTX, where it
//! derives from IVersionedInterface), 10 (TensorRT 10: findLogger is the first virtual), 0 if not recognised.
int32_t finderLayout(nvinfer1::ILoggerFinder const* finder) noexcept
{
    Dl_info info{};
    void const* const vtable = *reinterpret_cast<void const* const*>(finder);
    if (dladdr(vtable, &info) == 0 || info.dli_fname == nullptr)
    {
        return 0;
    }
    char const* name = std::strrchr(info.dli_fname, '/');
    name = name != nullptr ? name + 1 : info.dli_fname;
    if (std::strncmp(name, "libtensorrt_rtx", 15) == 0)
    {
        return 11;
    }
    char const* const so = std::strstr(name, ".so.");
    if (std::strncmp(name, "libnvinfer", 10) == 0 && so != nullptr)
    {
        return std::atoi(so + 4) >= 11 ? 11 : 10;
    }
    return 0;
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    // A finder from a runtime with the other layout would be called through the wrong vtable slot (a 10.x build in
    // TensorRT-RTX would call getAPILanguage() and take its 0 for a null logger): ignore it, messages then go to
    // the fallback logger or stderr. The plugin and creator interfaces themselves are the same in both layouts.
    constexpr int32_t kOurLayout = NV_TENSORRT_MAJOR >= 11 ? 11 : 10;
    int32_t const theirs = finder != nullptr ? finderLayout(finder) : 0;
    gLoggerFinder.store(theirs == 0 || theirs == kOurLayout ? finder : nullptr);
}

void setFallbackLogger(ILogger* logger) noexcept
{
    gFallbackLogger.store(logger);
}

std::string lastError()
{
    LastError& state = lastErrorState();
    std::lock_guard<std::mutex> lock(state.mutex);
    return state.message;
}

void reportError(std::string const& message) noexcept
{
    try
    {
        {
            LastError& state = lastErrorState();
            std::lock_guard<std::mutex> lock(state.mutex);
            state.message = message;
        }
        emit(ILogger::Severity::kERROR, message);
    }
    catch (...)
    {
        std::fputs("dvit plugins: error while reporting an error\n", stderr);
    }
}

void reportWarning(std::string const& message) noexcept
{
    emit(ILogger::Severity::kWARNING, message);
}

} // namespace trt
} // namespace dvit
