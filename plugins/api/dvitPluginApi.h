/*
 * dvit-edge plugins: the plugin library's entry points (implemented in dvitPluginApi.cpp), for C/C++ callers and
 * the host tests. Python reaches the same functions through ctypes.
 */
#ifndef DVIT_PLUGIN_API_H
#define DVIT_PLUGIN_API_H

#include "dvitMacros.h"

#include <NvInferRuntime.h>

#include <cstdint>

namespace dvit
{
namespace trt
{
//! Every op's creator, in the order of plugins/*Plugin/ (the list CMake generates from the op folders).
nvinfer1::IPluginCreatorV3One* const* pluginCreators(int32_t& nbCreators) noexcept;
} // namespace trt
} // namespace dvit

extern "C" {

//! Registers every creator of the library with the global plugin registry of each TensorRT runtime loaded in this
//! process (libnvinfer, its lean/dispatch runtimes, TensorRT-RTX). Returns 0 when registered with at least one (or
//! already registered), non-zero otherwise (message in dvit_trt_plugin_last_error()). Safe to call more than once.
DVIT_EXPORT int32_t dvit_trt_register_plugins(void);

//! The most recent error the plugin library reported ("" if none).
DVIT_EXPORT char const* dvit_trt_plugin_last_error(void);

#if !defined(DVIT_STATIC_REGISTRATION)
//! Plugin-library entry point (TensorRT >= 10): the creators this library provides.
DVIT_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);

//! Plugin-library entry point: the logger finder TensorRT passes when it loads the library.
DVIT_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
#endif

} // extern "C"

#endif // DVIT_PLUGIN_API_H
