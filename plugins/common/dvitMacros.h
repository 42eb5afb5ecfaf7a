/*
 * dvit-edge plugins: macros shared by every op folder and by the library entry points (plugins/api/). Plain C, no
 * CUDA and no TensorRT: the kernel libraries (no TensorRT) include it too.
 *
 * Naming rule of the libraries: every extern "C" entry point of an op starts with "dvit_" (the version scripts
 * export dvit_* and TensorRT's getCreators/setLoggerFinder; everything else, the static CUDA runtime included,
 * stays inside the library).
 */
#ifndef DVIT_MACROS_H
#define DVIT_MACROS_H

//! Marks an extern "C" entry point that leaves the shared library (the build hides everything else).
#if defined(_WIN32)
#define DVIT_EXPORT __declspec(dllexport)
#else
#define DVIT_EXPORT __attribute__((visibility("default")))
#endif

//! DVIT_STR(NV_TENSORRT_MAJOR) -> "10": a macro's value as a string literal.
#define DVIT_STR2(x) #x
#define DVIT_STR(x) DVIT_STR2(x)

#endif // DVIT_MACROS_H
