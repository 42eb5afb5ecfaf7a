/*
 * dvit-edge plugins: where the plugin library's messages go, shared by every op.
 *
 * A message reaches, in this order of preference: the logger of the ILoggerFinder TensorRT handed to the library
 * (setLoggerFinder, when it loads the library with IPluginRegistry::loadLibrary), the global logger of the TensorRT
 * runtime the creators were registered with (getLogger, found by plugins/api/), else stderr. The last error is kept
 * for dvit_trt_plugin_last_error().
 *
 * The state behind it lives in function-local statics that are never destroyed and in constant-initialised atomics:
 * the load-time registrar of libdvit_trt_plugins_static.so runs during static initialisation, in another
 * translation unit, and may report before or after the other objects of the library are constructed.
 */
#ifndef DVIT_LOGGING_H
#define DVIT_LOGGING_H

#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <string>

#if !defined(NV_TENSORRT_MAJOR) || NV_TENSORRT_MAJOR < 10
#error "the dvit plugins need the TensorRT 10 (or newer) headers: IPluginV3 appeared in TensorRT 10.0."
#endif

namespace dvit
{
namespace trt
{

//! Reports an error (kERROR) and keeps it as the library's last error (dvit_trt_plugin_last_error()).
void reportError(std::string const& message) noexcept;
//! Logs at warning level (same route as reportError, not kept as last error).
void reportWarning(std::string const& message) noexcept;
//! The logger finder TensorRT passes to a plugin library it loads (extern "C" setLoggerFinder). Ignored when the
//! library implementing it has the other ILoggerFinder layout (10.x headers vs TensorRT >= 11 / TensorRT-RTX).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;
//! A logger used when no logger finder was set (the runtime's global logger, found at registration).
void setFallbackLogger(nvinfer1::ILogger* logger) noexcept;
//! The most recent message given to reportError ("" if none).
std::string lastError();

} // namespace trt
} // namespace dvit

#endif // DVIT_LOGGING_H
