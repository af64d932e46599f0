// hotloop.collate._decollate: the native half of hotloop.collate.decollate_batch.
//
// pybind11 defines the module and turns a pending Python exception into error_already_set; the work is plain CPython
// API in decollate.cpp, which never throws.
#include <pybind11/pybind11.h>

#include "decollate.hpp"

namespace py = pybind11;

namespace {

constexpr const char* kDoc = R"doc(decollate_batch(batch, detach=True, pad=True, fill_value=None)

monai.data.decollate_batch, in C++: a batch (nested dicts, lists and tuples of batch-first tensors, per-sample lists
and scalars) becomes a list of per-sample structures. See hotloop.collate.decollate_batch for the full contract.)doc";

py::object decollate_batch(const py::object& batch, const py::object& detach, const py::object& pad,
                           const py::object& fill_value) {
  PyObject* out = hotloop::decollate_batch(batch.ptr(), detach.ptr(), pad.ptr(), fill_value.ptr());
  if (out == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(out);
}

}  // namespace

PYBIND11_MODULE(_decollate, m) {
  m.doc() = "Native batch decollation for hotloop.collate (CPython API; torch is reached through Python objects).";
  if (!hotloop::init_decollate()) throw py::error_already_set();
  m.def("decollate_batch", &decollate_batch, kDoc, py::arg("batch"), py::arg("detach") = true, py::arg("pad") = true,
        py::arg("fill_value") = py::none());
  m.attr("MAX_DEPTH") = hotloop::kMaxDepth;
}
