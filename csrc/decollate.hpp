// Batch decollation (monai.data.decollate_batch semantics) over Python objects, in the CPython API.
//
// Nothing here links libtorch: tensors are handled through their Python methods (docs/native.md says why).
// Every function follows the CPython convention: a new reference on success, nullptr with a Python exception set
// on failure. No C++ exception crosses this interface.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

namespace hotloop {

// The deepest nesting of containers (and MetaTensor metadata) that decollation walks; deeper input raises
// RecursionError. The pure-Python reference (hotloop.collate._reference.MAX_DEPTH) uses the same number.
constexpr int kMaxDepth = 128;

// Looks up torch, collections.abc and copy once, at module import. Returns false with a Python exception set.
bool init_decollate();

// decollate_batch(batch, detach=True, pad=True, fill_value=None): a new reference, or nullptr with an exception.
PyObject* decollate_batch(PyObject* batch, PyObject* detach, PyObject* pad, PyObject* fill_value);

}  // namespace hotloop
