// monai.data.decollate_batch (MONAI 1.6.1) over Python objects: the same walk, the same results, the same
// exception types, without the interpreter's per-node overhead. Its pure-Python twin, step for step, is
// src/hotloop/collate/_reference.py; tests/collate/test_decollate.py holds the two (and MONAI) equal.
//
// Where the two differ from MONAI, they differ together: reference cycles raise ValueError (MONAI recurses until
// RecursionError), nesting deeper than kMaxDepth raises RecursionError, and the exceptions MONAI raises by accident
// (IndexError on a tensor with batch size 0, TypeError from zip with pad=False) keep their types but say what is
// wrong and where.
#include "decollate.hpp"

#include <utility>
#include <vector>

namespace hotloop {
namespace {

// ---------------------------------------------------------------------------------------------------------------
// Owned references.

class Ref {
 public:
  Ref() noexcept = default;
  static Ref steal(PyObject* p) noexcept {
    Ref r;
    r.p_ = p;
    return r;
  }
  static Ref borrow(PyObject* p) noexcept {
    Py_XINCREF(p);
    return steal(p);
  }
  Ref(Ref&& other) noexcept : p_(other.p_) { other.p_ = nullptr; }
  Ref& operator=(Ref&& other) noexcept {
    if (this != &other) {
      PyObject* old = p_;
      p_ = other.p_;
      other.p_ = nullptr;
      Py_XDECREF(old);
    }
    return *this;
  }
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  ~Ref() { Py_XDECREF(p_); }

  PyObject* get() const noexcept { return p_; }
  PyObject* release() noexcept {
    PyObject* p = p_;
    p_ = nullptr;
    return p;
  }
  explicit operator bool() const noexcept { return p_ != nullptr; }

 private:
  PyObject* p_ = nullptr;
};

// ---------------------------------------------------------------------------------------------------------------
// What init_decollate() looks up once. Strong references, kept for the life of the process (the module cannot be
// unloaded).

struct Names {
  PyObject* ndim;
  PyObject* item;
  PyObject* detach;
  PyObject* tolist;
  PyObject* as_subclass;
  PyObject* dunder_dict;
  PyObject* dunder_class;
  PyObject* enter;
  PyObject* exit;
  PyObject* requires_grad;
  PyObject* dunder_module;
  PyObject* dunder_qualname;
  PyObject* numpy;
  PyObject* shape;
  PyObject* layout;
  PyObject* dtype;
  PyObject* is_nested;
  PyObject* meta;
  PyObject* is_batch;
  PyObject* applied_operations;
  PyObject* private_meta;
  PyObject* private_is_batch;
  PyObject* private_applied_operations;
  PyObject* track_meta;
  PyObject* meta_tensor_module;
  PyObject* meta_obj_module;
  PyObject* enums_module;
  PyObject* meta_tensor_class;
  PyObject* meta_obj_class;
  PyObject* trace_keys_class;
  PyObject* none_key;
};

struct Globals {
  Names names;
  PyObject* zero;              // 0
  PyObject* dim_kwnames;       // ("dim",)
  PyObject* tensor_type;       // torch.Tensor
  PyObject* unbind;            // torch.unbind
  PyObject* strided;           // torch.strided
  PyObject* tf_enabled;        // torch._C._is_torch_function_enabled
  PyObject* tf_mode_enabled;   // torch._C._is_torch_function_mode_enabled
  PyObject* disable_subclass;  // torch._C.DisableTorchFunctionSubclass
  PyObject* mapping_abc;       // collections.abc.Mapping
  PyObject* iterable_abc;      // collections.abc.Iterable
  PyObject* sized_abc;         // collections.abc.Sized
  PyObject* deepcopy;          // copy.deepcopy
  std::vector<PyObject*> tolist_dtypes;  // dtypes whose tolist() gives exactly [t.item() for t in x.unbind(0)]
};

Globals g;

// MONAI's types, found in sys.modules once MONAI has been imported (an object of a class cannot exist before its
// module does, so a batch holds no MetaTensor until then).
struct Monai {
  PyObject* meta_obj = nullptr;          // monai.data.meta_obj.MetaObj
  PyObject* meta_tensor = nullptr;       // monai.data.meta_tensor.MetaTensor
  PyObject* meta_obj_globals = nullptr;  // monai.data.meta_obj.__dict__, where _TRACK_META lives
  PyObject* trace_none = nullptr;        // monai.utils.enums.TraceKeys.NONE
};

Monai monai;

// ---------------------------------------------------------------------------------------------------------------
// The walk's state: the containers entered, outermost first, each with the step taken into the current child. It
// detects cycles, bounds the depth, and names the place of an error ("batch['image'].meta['affine'][0]").

enum class Step : unsigned char { kKey, kIndex, kMeta };

struct Frame {
  PyObject* container;  // borrowed: the caller holds it while it is walked
  Step step;
  PyObject* key;  // borrowed, kKey: held by the walk's snapshot of the mapping
  Py_ssize_t index;
};

struct Options {
  bool detach;
  bool pad;
  PyObject* fill_value;
};

// MONAI decollates MetaTensor metadata with decollate_batch's defaults, whatever the outer call's arguments.
const Options kMetaOptions{true, true, Py_None};

struct State {
  State() { frames.reserve(kMaxDepth); }
  std::vector<Frame> frames;
  int plain_dispatch = -1;  // 1: no torch-function mode is active, so plain tensors may skip torch.unbind
  int meta_dispatch = -1;   // 1: MetaTensor's __torch_function__ would run, with metadata tracking on
};

PyObject* format_path(const State& s, size_t count) {
  Ref out = Ref::steal(PyUnicode_FromString("batch"));
  for (size_t i = 0; out && i < count; ++i) {
    const Frame& f = s.frames[i];
    Ref part;
    switch (f.step) {
      case Step::kKey:  // the key is set before any child is walked; "[?]" only guards against a null %R
        part = Ref::steal(f.key != nullptr ? PyUnicode_FromFormat("[%R]", f.key) : PyUnicode_FromString("[?]"));
        break;
      case Step::kIndex:
        part = Ref::steal(PyUnicode_FromFormat("[%zd]", f.index));
        break;
      case Step::kMeta:
        part = Ref::steal(PyUnicode_FromString(".meta"));
        break;
    }
    if (!part) return nullptr;
    out = Ref::steal(PyUnicode_Concat(out.get(), part.get()));
  }
  return out.release();
}

PyObject* type_qualname(PyObject* obj) {
  return PyObject_GetAttr(reinterpret_cast<PyObject*>(Py_TYPE(obj)), g.names.dunder_qualname);
}

// The exception in flight, taken aside while cleanup code runs, then put back.
class PendingError {
 public:
#if PY_VERSION_HEX >= 0x030C0000
  PendingError() : exc_(PyErr_GetRaisedException()) {}
  bool any() const { return exc_ != nullptr; }
  void restore() {
    PyErr_SetRaisedException(exc_);
    exc_ = nullptr;
  }
  ~PendingError() { Py_XDECREF(exc_); }

 private:
  PyObject* exc_;
#else
  PendingError() { PyErr_Fetch(&type_, &value_, &traceback_); }
  bool any() const { return type_ != nullptr; }
  void restore() {
    PyErr_Restore(type_, value_, traceback_);
    type_ = value_ = traceback_ = nullptr;
  }
  ~PendingError() {
    Py_XDECREF(type_);
    Py_XDECREF(value_);
    Py_XDECREF(traceback_);
  }

 private:
  PyObject* type_ = nullptr;
  PyObject* value_ = nullptr;
  PyObject* traceback_ = nullptr;
#endif
  PendingError(const PendingError&) = delete;
  PendingError& operator=(const PendingError&) = delete;
};

// The exception in flight as a normalized instance (a new reference); the error indicator is cleared.
PyObject* fetch_exception() {
#if PY_VERSION_HEX >= 0x030C0000
  return PyErr_GetRaisedException();
#else
  PyObject *type = nullptr, *value = nullptr, *traceback = nullptr;
  PyErr_Fetch(&type, &value, &traceback);
  PyErr_NormalizeException(&type, &value, &traceback);
  if (traceback != nullptr && value != nullptr) PyException_SetTraceback(value, traceback);
  Py_XDECREF(type);
  Py_XDECREF(traceback);
  return value;
#endif
}

// Raises `exc_type(message)` from `cause` (Python's `raise ... from cause`). Steals `cause`.
void raise_from(PyObject* exc_type, PyObject* message, PyObject* cause) {
  Ref owned_cause = Ref::steal(cause);
  Ref exc = Ref::steal(PyObject_CallOneArg(exc_type, message));
  if (!exc) return;
  if (owned_cause) {
    PyException_SetContext(exc.get(), Py_NewRef(owned_cause.get()));
    PyException_SetCause(exc.get(), owned_cause.release());  // steals
  }
  PyErr_SetObject(exc_type, exc.get());
}

class PathGuard {
 public:
  // Enters `container`, refusing a cycle (ValueError) or nesting deeper than kMaxDepth (RecursionError).
  PathGuard(State& s, PyObject* container, Step step) : s_(s) {
    const size_t depth = s.frames.size();
    if (depth >= static_cast<size_t>(kMaxDepth)) {
      Ref path = Ref::steal(format_path(s, depth));
      if (path) {
        PyErr_Format(PyExc_RecursionError, "decollate_batch: %U is nested deeper than %d containers", path.get(),
                     kMaxDepth);
      }
      return;
    }
    for (size_t outer = 0; outer < depth; ++outer) {
      if (s.frames[outer].container == container) {
        raise_cycle(outer, container);
        return;
      }
    }
    s.frames.push_back(Frame{container, step, nullptr, 0});
    index_ = depth;
    ok_ = true;
  }
  PathGuard(const PathGuard&) = delete;
  PathGuard& operator=(const PathGuard&) = delete;
  ~PathGuard() {
    if (ok_) s_.frames.pop_back();
  }

  bool ok() const { return ok_; }
  void at_key(PyObject* key) { s_.frames[index_].key = key; }
  void at_index(Py_ssize_t index) { s_.frames[index_].index = index; }

 private:
  void raise_cycle(size_t outer, PyObject* container) {
    Ref inner_path = Ref::steal(format_path(s_, s_.frames.size()));
    Ref outer_path = inner_path ? Ref::steal(format_path(s_, outer)) : Ref();
    Ref name = outer_path ? Ref::steal(type_qualname(container)) : Ref();
    if (name) {
      PyErr_Format(PyExc_ValueError,
                   "decollate_batch: %U is the same %U object as %U: the batch contains a reference cycle",
                   inner_path.get(), name.get(), outer_path.get());
    }
  }

  State& s_;
  size_t index_ = 0;
  bool ok_ = false;
};

// ---------------------------------------------------------------------------------------------------------------
// Small predicates. Each returns 1 / 0, or -1 with an exception set.

// `value == 0`, as an `if` reads it.
int equals_zero(PyObject* value) {
  if (PyLong_CheckExact(value)) {
    int overflow = 0;
    const long v = PyLong_AsLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    return overflow == 0 && v == 0;
  }
  Ref result = Ref::steal(PyObject_RichCompare(value, g.zero, Py_EQ));
  return result ? PyObject_IsTrue(result.get()) : -1;
}

// getattr(obj, name) that answers "absent" (0) on AttributeError alone, as getattr with a default and hasattr do.
int get_optional_attr(PyObject* obj, PyObject* name, Ref* out) {
  *out = Ref::steal(PyObject_GetAttr(obj, name));
  if (*out) return 1;
  if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
  PyErr_Clear();
  return 0;
}

// `getattr(obj, "ndim", -1) == 0 and hasattr(obj, "item")`: a 0-d tensor or array.
int is_zero_dim_with_item(PyObject* obj) {
  Ref ndim;
  int found = get_optional_attr(obj, g.names.ndim, &ndim);
  if (found <= 0) return found;
  const int zero = equals_zero(ndim.get());
  if (zero <= 0) return zero;
  Ref item;
  return get_optional_attr(obj, g.names.item, &item);
}

// `type(obj).__module__ == "numpy" and not isinstance(obj, Iterable)`: a NumPy scalar.
int is_numpy_scalar(PyObject* obj) {
  Ref module = Ref::steal(PyObject_GetAttr(reinterpret_cast<PyObject*>(Py_TYPE(obj)), g.names.dunder_module));
  if (!module) return -1;
  int is_numpy;
  if (PyUnicode_CheckExact(module.get())) {
    is_numpy = PyUnicode_CompareWithASCIIString(module.get(), "numpy") == 0;
  } else {
    Ref eq = Ref::steal(PyObject_RichCompare(module.get(), g.names.numpy, Py_EQ));
    is_numpy = eq ? PyObject_IsTrue(eq.get()) : -1;
    if (is_numpy < 0) return -1;
  }
  if (!is_numpy) return 0;
  const int iterable = PyObject_IsInstance(obj, g.iterable_abc);
  return iterable < 0 ? -1 : !iterable;
}

Py_ssize_t tensor_ndim(PyObject* tensor) {
  Ref ndim = Ref::steal(PyObject_GetAttr(tensor, g.names.ndim));
  return ndim ? PyLong_AsSsize_t(ndim.get()) : -1;
}

// A strided, non-nested tensor of a dtype whose tolist() equals [t.item() for t in x.unbind(0)] for 1-d x.
int tolist_is_exact(PyObject* tensor) {
  Ref layout = Ref::steal(PyObject_GetAttr(tensor, g.names.layout));
  if (!layout) return -1;
  if (layout.get() != g.strided) return 0;
  Ref nested = Ref::steal(PyObject_GetAttr(tensor, g.names.is_nested));
  if (!nested) return -1;
  if (nested.get() != Py_False) return 0;
  Ref dtype = Ref::steal(PyObject_GetAttr(tensor, g.names.dtype));
  if (!dtype) return -1;
  for (PyObject* exact : g.tolist_dtypes) {
    if (dtype.get() == exact) return 1;
  }
  return 0;
}

int call_predicate(PyObject* fn) {
  Ref result = Ref::steal(PyObject_CallNoArgs(fn));
  return result ? PyObject_IsTrue(result.get()) : -1;
}

// Plain tensors may call unbind/tolist directly unless a torch-function mode would see MONAI's calls.
int plain_dispatch(State& s) {
  if (s.plain_dispatch < 0) {
    const int mode = call_predicate(g.tf_mode_enabled);
    if (mode < 0) return -1;
    s.plain_dispatch = !mode;
  }
  return s.plain_dispatch;
}

// A MetaTensor may take the direct path when its __torch_function__ would run with metadata tracking on.
int meta_dispatch(State& s) {
  if (s.meta_dispatch < 0) {
    const int plain = plain_dispatch(s);
    if (plain < 0) return -1;
    const int enabled = call_predicate(g.tf_enabled);
    if (enabled < 0) return -1;
    int track = 0;
    PyObject* flag = PyDict_GetItemWithError(monai.meta_obj_globals, g.names.track_meta);  // borrowed
    if (flag != nullptr) {
      track = PyObject_IsTrue(flag);
      if (track < 0) return -1;
    } else if (PyErr_Occurred()) {
      return -1;
    }
    s.meta_dispatch = plain && enabled && track;
  }
  return s.meta_dispatch;
}

// `value == TraceKeys.NONE`, as MONAI's meta and applied_operations setters test it.
int is_trace_none(PyObject* value) {
  if (PyDict_CheckExact(value) || PyList_CheckExact(value)) return 0;  // never equal to a str
  Ref eq = Ref::steal(PyObject_RichCompare(value, monai.trace_none, Py_EQ));
  return eq ? PyObject_IsTrue(eq.get()) : -1;
}

// Finds MetaObj, MetaTensor and TraceKeys.NONE once MONAI has been imported. Returns false with an exception set.
bool refresh_monai() {
  if (monai.meta_tensor != nullptr) return true;
  PyObject* modules = PyImport_GetModuleDict();  // borrowed
  PyObject* meta_tensor_module = PyDict_GetItemWithError(modules, g.names.meta_tensor_module);
  if (meta_tensor_module == nullptr) return !PyErr_Occurred();
  PyObject* meta_obj_module = PyDict_GetItemWithError(modules, g.names.meta_obj_module);
  PyObject* enums_module = meta_obj_module ? PyDict_GetItemWithError(modules, g.names.enums_module) : nullptr;
  if (enums_module == nullptr) return !PyErr_Occurred();
  // While MONAI is still being imported these attributes may not exist yet: look again on the next call.
  Ref meta_tensor, meta_obj, trace_keys, trace_none;
  if (get_optional_attr(meta_tensor_module, g.names.meta_tensor_class, &meta_tensor) <= 0 ||
      get_optional_attr(meta_obj_module, g.names.meta_obj_class, &meta_obj) <= 0 ||
      get_optional_attr(enums_module, g.names.trace_keys_class, &trace_keys) <= 0 ||
      get_optional_attr(trace_keys.get(), g.names.none_key, &trace_none) <= 0) {
    return !PyErr_Occurred();
  }
  Ref globals = Ref::steal(PyObject_GetAttr(meta_obj_module, g.names.dunder_dict));
  if (!globals) return false;
  if (!PyDict_Check(globals.get())) return true;
  monai.meta_obj = meta_obj.release();
  monai.trace_none = trace_none.release();
  monai.meta_obj_globals = globals.release();
  monai.meta_tensor = meta_tensor.release();
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Errors that name the place.

PyObject* raise_not_decollatable(const State& s, PyObject* obj) {
  Ref path = Ref::steal(format_path(s, s.frames.size()));
  Ref name = path ? Ref::steal(type_qualname(obj)) : Ref();
  if (name) {
    PyErr_Format(PyExc_NotImplementedError,
                 "decollate_batch: %U (%U) is not a tensor, mapping, iterable, number, string or None: cannot "
                 "decollate it",
                 path.get(), name.get());
  }
  return nullptr;
}

PyObject* raise_empty_batch(const State& s, size_t depth, PyObject* tensor) {
  Ref path = Ref::steal(format_path(s, depth));
  Ref shape = path ? Ref::steal(PyObject_GetAttr(tensor, g.names.shape)) : Ref();
  Ref dims = shape ? Ref::steal(PySequence_Tuple(shape.get())) : Ref();
  if (dims) {
    PyErr_Format(PyExc_IndexError,
                 "decollate_batch: %U is a tensor with batch size 0 (shape %R): it has no sample to decollate",
                 path.get(), dims.get());
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------------------------------
// The walk.

PyObject* decollate(PyObject* obj, const Options& o, State& s);

PyObject* call_unbind(PyObject* tensor) {
  PyObject* args[] = {tensor, g.zero};
  return PyObject_Vectorcall(g.unbind, args, 2, nullptr);
}

// torch.unbind(tensor, dim=0), exactly as MONAI calls it (a subclass's __torch_function__ sees the same kwargs).
PyObject* call_unbind_dim_kw(PyObject* tensor) {
  PyObject* args[] = {tensor, g.zero};
  return PyObject_Vectorcall(g.unbind, args, 1, g.dim_kwnames);
}

// `[t.item() for t in out] if out[0].ndim == 0 and detach else list(out)`, after the emptiness check. Inside a
// container (depth > 0) the samples are a column that only zip_columns reads, so torch.unbind's tuple is returned
// as it is instead of being copied into a list; the batch itself (depth 0) gives the list MONAI returns.
PyObject* finish_unbound(PyObject* parts, const Options& o, const State& s, size_t depth, PyObject* tensor) {
  const bool as_tuple = depth > 0 && PyTuple_CheckExact(parts);
  Ref out = as_tuple ? Ref::borrow(parts) : Ref::steal(PySequence_List(parts));
  if (!out) return nullptr;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(out.get());
  if (n == 0) return raise_empty_batch(s, depth, tensor);
  Ref ndim = Ref::steal(PyObject_GetAttr(PySequence_Fast_GET_ITEM(out.get(), 0), g.names.ndim));
  if (!ndim) return nullptr;
  const int zero = equals_zero(ndim.get());
  if (zero < 0) return nullptr;
  if (!zero || !o.detach) return out.release();
  if (as_tuple) out = Ref::steal(PySequence_List(parts));  // .item() replaces the samples: a list of its own
  if (!out) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* item = PyObject_CallMethodNoArgs(PyList_GET_ITEM(out.get(), i), g.names.item);
    if (item == nullptr) return nullptr;
    PyList_SetItem(out.get(), i, item);  // steals item, releases the tensor
  }
  return out.release();
}

// A 1-d batch with detach: its Python scalars, in one tolist() when that is exact.
PyObject* unbind_scalars(PyObject* tensor, const Options& o, const State& s, size_t depth) {
  const int exact = tolist_is_exact(tensor);
  if (exact < 0) return nullptr;
  if (!exact) {
    Ref parts = Ref::steal(call_unbind(tensor));
    return parts ? finish_unbound(parts.get(), o, s, depth, tensor) : nullptr;
  }
  Ref out = Ref::steal(PyObject_CallMethodNoArgs(tensor, g.names.tolist));
  if (!out) return nullptr;
  if (!PyList_Check(out.get()) || PyList_GET_SIZE(out.get()) == 0) return raise_empty_batch(s, depth, tensor);
  return out.release();
}

// for t, v in zip(parts, values): if isinstance(t, MetaObj): setattr(t, attr, v); t.is_batch = False
bool assign_each(PyObject* parts, PyObject* values, PyObject* attr) {
  Ref parts_it = Ref::steal(PyObject_GetIter(parts));
  if (!parts_it) return false;
  Ref values_it = Ref::steal(PyObject_GetIter(values));
  if (!values_it) return false;
  for (;;) {
    Ref part = Ref::steal(PyIter_Next(parts_it.get()));
    if (!part) return !PyErr_Occurred();
    Ref value = Ref::steal(PyIter_Next(values_it.get()));
    if (!value) return !PyErr_Occurred();
    const int is_meta = PyObject_IsInstance(part.get(), monai.meta_obj);
    if (is_meta < 0) return false;
    if (!is_meta) continue;
    if (PyObject_SetAttr(part.get(), attr, value.get()) < 0) return false;
    if (PyObject_SetAttr(part.get(), g.names.is_batch, Py_False) < 0) return false;
  }
}

// MONAI's tensor branch through Python calls: tensor subclasses, MetaTensors that are not batches, and anything
// under a torch-function mode.
PyObject* decollate_tensor_generic(PyObject* obj, const Options& o, State& s) {
  const size_t depth = s.frames.size();
  Ref tensor = o.detach ? Ref::steal(PyObject_CallMethodNoArgs(obj, g.names.detach)) : Ref::borrow(obj);
  if (!tensor) return nullptr;
  Ref parts = Ref::steal(call_unbind_dim_kw(tensor.get()));
  if (!parts) return nullptr;
  if (monai.meta_obj != nullptr) {
    const int is_meta = PyObject_IsInstance(tensor.get(), monai.meta_obj);
    if (is_meta < 0) return nullptr;
    if (is_meta) {
      PathGuard guard(s, obj, Step::kMeta);
      if (!guard.ok()) return nullptr;
      Ref meta = Ref::steal(PyObject_GetAttr(tensor.get(), g.names.meta));
      Ref metas = meta ? Ref::steal(decollate(meta.get(), kMetaOptions, s)) : Ref();
      if (!metas || !assign_each(parts.get(), metas.get(), g.names.meta)) return nullptr;
      Ref ops = Ref::steal(PyObject_GetAttr(tensor.get(), g.names.applied_operations));
      if (!ops || !assign_each(parts.get(), ops.get(), g.names.applied_operations)) return nullptr;
    }
  }
  return finish_unbound(parts.get(), o, s, depth, tensor.get());
}

// zip(dicts, values): each per-sample __dict__ gets its `key` (TraceKeys.NONE read as the empty default) and
// _is_batch = False, as MONAI's setters leave them.
bool assign_private(std::vector<Ref>& dicts, PyObject* values, PyObject* key, bool list_default) {
  Ref it = Ref::steal(PyObject_GetIter(values));
  if (!it) return false;
  for (Ref& dict : dicts) {
    Ref value = Ref::steal(PyIter_Next(it.get()));
    if (!value) return !PyErr_Occurred();
    const int none = is_trace_none(value.get());
    if (none < 0) return false;
    if (none) value = Ref::steal(list_default ? PyList_New(0) : PyDict_New());
    if (!value || PyDict_SetItem(dict.get(), key, value.get()) < 0) return false;
    if (PyDict_SetItem(dict.get(), g.names.private_is_batch, Py_False) < 0) return false;
  }
  return true;
}

// `instance.__dict__.get(key)`, or a new `{}` / `[]` as MetaObj's properties default.
Ref private_or_default(PyObject* dict, PyObject* key, bool list_default) {
  PyObject* value = PyDict_GetItemWithError(dict, key);  // borrowed
  if (value != nullptr) return Ref::borrow(value);
  if (PyErr_Occurred()) return Ref();
  return Ref::steal(list_default ? PyList_New(0) : PyDict_New());
}

// `tensor.detach()` where that changes anything: a tensor that does not require grad is unbound as it is (the
// samples are the same views of the same storage, without requiring grad; only their `_base` differs, see
// docs/native.md). Saves one tensor op per batched tensor.
Ref detach_if_needed(PyObject* tensor, bool detach) {
  if (!detach) return Ref::borrow(tensor);
  Ref requires_grad = Ref::steal(PyObject_GetAttr(tensor, g.names.requires_grad));
  if (!requires_grad) return Ref();
  if (requires_grad.get() == Py_False) return Ref::borrow(tensor);
  return Ref::steal(PyObject_CallMethodNoArgs(tensor, g.names.detach));
}

// `with torch._C.DisableTorchFunctionSubclass(): return fn()`: tensor-subclass arguments are seen as plain tensors
// (no __torch_function__) and new tensors come back plain. The scope is left whatever happens in it.
template <typename Fn>
PyObject* without_subclass_dispatch(Fn&& fn) {
  Ref scope = Ref::steal(PyObject_CallNoArgs(g.disable_subclass));
  Ref entered = scope ? Ref::steal(PyObject_CallMethodNoArgs(scope.get(), g.names.enter)) : Ref();
  if (!entered) return nullptr;
  Ref result = Ref::steal(fn());
  PendingError pending;
  PyObject* args[] = {scope.get(), Py_None, Py_None, Py_None};
  Ref exited = Ref::steal(PyObject_VectorcallMethod(g.names.exit, args, 4, nullptr));
  if (!pending.any()) return exited ? result.release() : nullptr;
  if (!exited) PyErr_WriteUnraisable(scope.get());  // keep the first error, report the second
  pending.restore();
  return nullptr;
}

// An exact MetaTensor whose __torch_function__ would run with metadata tracking on (MONAI's tests from the 0-d one
// on). For a batch (is_batch) of 2 or more dimensions, MONAI's calls (detach, torch.unbind, each sample re-wrapped
// by as_subclass and given a shallow copy of the batch's __dict__ by update_meta, then its own metadata) come down
// to: unbind the data as plain tensors, make each sample a MetaTensor by setting its __class__ (no alias op), and
// give it a copy of the batch's __dict__ with its own decollated metadata and applied operations.
PyObject* decollate_meta_tensor(PyObject* obj, const Options& o, State& s) {
  const size_t depth = s.frames.size();
  Ref dict = Ref::steal(PyObject_GetAttr(obj, g.names.dunder_dict));
  if (!dict) return nullptr;
  int is_batch = 0;
  if (PyDict_CheckExact(dict.get())) {
    PyObject* flag = PyDict_GetItemWithError(dict.get(), g.names.private_is_batch);  // borrowed
    if (flag == nullptr && PyErr_Occurred()) return nullptr;
    is_batch = flag == nullptr ? 0 : PyObject_IsTrue(flag);
    if (is_batch < 0) return nullptr;
  }
  // One scope reads the number of dimensions and, for a batch of 2 or more, unbinds it.
  Py_ssize_t ndim = -1;
  Ref parts = Ref::steal(without_subclass_dispatch([obj, is_batch, &ndim, &o]() -> PyObject* {
    ndim = tensor_ndim(obj);
    if (ndim < 0) return nullptr;
    if (ndim == 0 || !is_batch || (o.detach && ndim == 1)) return Py_NewRef(Py_None);
    Ref source = detach_if_needed(obj, o.detach);
    return source ? call_unbind(source.get()) : nullptr;
  }));
  if (!parts) return nullptr;
  if (ndim == 0) return o.detach ? PyObject_CallMethodNoArgs(obj, g.names.item) : Py_NewRef(obj);
  if (parts.get() == Py_None) return decollate_tensor_generic(obj, o, s);  // not a batch, or 1-d numbers
  if (!PyTuple_Check(parts.get())) {
    PyErr_SetString(PyExc_TypeError, "decollate_batch: torch.unbind did not return a tuple");
    return nullptr;
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(parts.get());
  std::vector<Ref> dicts;
  dicts.reserve(n);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (PyObject_SetAttr(PyTuple_GET_ITEM(parts.get(), i), g.names.dunder_class, monai.meta_tensor) < 0) {
      return nullptr;
    }
    dicts.push_back(Ref::steal(PyDict_Copy(dict.get())));
    if (!dicts.back()) return nullptr;
  }
  {
    PathGuard guard(s, obj, Step::kMeta);
    if (!guard.ok()) return nullptr;
    Ref meta = private_or_default(dict.get(), g.names.private_meta, false);
    Ref metas = meta ? Ref::steal(decollate(meta.get(), kMetaOptions, s)) : Ref();
    if (!metas || !assign_private(dicts, metas.get(), g.names.private_meta, false)) return nullptr;
  }
  Ref ops = private_or_default(dict.get(), g.names.private_applied_operations, true);
  if (!ops || !assign_private(dicts, ops.get(), g.names.private_applied_operations, true)) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (PyObject_SetAttr(PyTuple_GET_ITEM(parts.get(), i), g.names.dunder_dict, dicts[i].get()) < 0) return nullptr;
  }
  if (n == 0) return raise_empty_batch(s, depth, obj);
  if (depth > 0 && PyTuple_CheckExact(parts.get())) return parts.release();  // a column: see finish_unbound
  return PySequence_List(parts.get());
}

// A torch.Tensor (any subclass) that is not 0-d.
PyObject* decollate_tensor(PyObject* obj, Py_ssize_t ndim, const Options& o, State& s) {
  const size_t depth = s.frames.size();
  PyTypeObject* type = Py_TYPE(obj);
  if (type == reinterpret_cast<PyTypeObject*>(g.tensor_type)) {
    const int direct = plain_dispatch(s);
    if (direct <= 0) return direct < 0 ? nullptr : decollate_tensor_generic(obj, o, s);
    if (o.detach && ndim == 1) return unbind_scalars(obj, o, s, depth);  // numbers: nothing to detach
    Ref tensor = detach_if_needed(obj, o.detach);
    if (!tensor) return nullptr;
    Ref parts = Ref::steal(call_unbind(tensor.get()));
    return parts ? finish_unbound(parts.get(), o, s, depth, tensor.get()) : nullptr;
  }
  return decollate_tensor_generic(obj, o, s);
}

// ---------------------------------------------------------------------------------------------------------------
// Containers: decollate every value, then zip the per-sample lists (MONAI's _non_zipping_check and zip step).

// PyDict_New's table (PyDict_MINSIZE = 8 slots) takes 5 keys; the sixth resizes it.
constexpr size_t kDictKeysWithoutResize = 5;

struct Columns {
  bool mapping = false;
  std::vector<Ref> keys;    // mapping only, in iteration order
  std::vector<Ref> values;  // decollated
};

PyObject* deepcopy(PyObject* value) {
  // copy.deepcopy returns these as they are (copy._deepcopy_atomic).
  if (value == Py_None || PyLong_CheckExact(value) || PyFloat_CheckExact(value) || PyBool_Check(value) ||
      PyUnicode_CheckExact(value) || PyBytes_CheckExact(value) || PyComplex_CheckExact(value)) {
    return Py_NewRef(value);
  }
  return PyObject_CallOneArg(g.deepcopy, value);
}

// MONAI's test for a value with no batch dimension: `not isinstance(v, Iterable) or isinstance(v, (str, bytes))
// or (isinstance(v, Tensor) and v.ndim == 0)`. Sets *length to len(v) for a sized iterable, else -1.
int is_unbatched(PyObject* v, Py_ssize_t* length) {
  *length = -1;
  if (PyList_CheckExact(v) || PyTuple_CheckExact(v) || PyDict_CheckExact(v)) {
    *length = PyObject_Length(v);
    return 0;
  }
  if (v == Py_None || PyLong_CheckExact(v) || PyFloat_CheckExact(v) || PyUnicode_CheckExact(v) ||
      PyBytes_CheckExact(v)) {
    return 1;
  }
  if (PyUnicode_Check(v) || PyBytes_Check(v)) return 1;  // iterable, so MONAI's first test would not decide
  const int iterable = PyObject_IsInstance(v, g.iterable_abc);
  if (iterable <= 0) return iterable < 0 ? -1 : 1;
  const int tensor = PyObject_IsInstance(v, g.tensor_type);
  if (tensor < 0) return -1;
  if (tensor) {
    Ref ndim = Ref::steal(PyObject_GetAttr(v, g.names.ndim));
    if (!ndim) return -1;
    const int zero = equals_zero(ndim.get());
    if (zero != 0) return zero;
  }
  const int sized = PyObject_IsInstance(v, g.sized_abc);
  if (sized < 0) return -1;
  if (sized) {
    *length = PyObject_Length(v);
    if (*length < 0) return -1;
  }
  return 0;
}

// The un-zipped container MONAI returns when no value has a batch dimension: a dict or a list.
PyObject* as_container(Columns& c) {
  const Py_ssize_t n = static_cast<Py_ssize_t>(c.values.size());
  if (c.mapping) {
    Ref out = Ref::steal(PyDict_New());
    if (!out) return nullptr;
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (PyDict_SetItem(out.get(), c.keys[i].get(), c.values[i].get()) < 0) return nullptr;
    }
    return out.release();
  }
  Ref out = Ref::steal(PyList_New(n));
  if (!out) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) PyList_SET_ITEM(out.get(), i, c.values[i].release());
  return out.release();
}

// Replaces the TypeError in flight (iterating an unbatched value for zip) by one that names the value, chained.
void raise_unbatched_without_pad(PathGuard& guard, const State& s, const Columns& c, size_t column) {
  PyObject* cause = fetch_exception();  // nothing may run with an exception set
  if (c.mapping) {
    guard.at_key(c.keys[column].get());
  } else {
    guard.at_index(static_cast<Py_ssize_t>(column));
  }
  Ref path = Ref::steal(format_path(s, s.frames.size()));
  Ref name = path ? Ref::steal(type_qualname(c.values[column].get())) : Ref();
  Ref message = name ? Ref::steal(PyUnicode_FromFormat(
                           "decollate_batch(pad=False): %U (%U) has no batch dimension to split; pad=True repeats it "
                           "for every sample",
                           path.get(), name.get()))
                     : Ref();
  if (!message) {
    Py_XDECREF(cause);
    return;
  }
  raise_from(PyExc_TypeError, message.get(), cause);
}

// The zip step, the container's frame still on the path. Returns a new list, or nullptr with an exception.
PyObject* zip_columns(Columns& c, const Options& o, State& s, PathGuard& guard) {
  const size_t n = c.values.size();
  Py_ssize_t batch_size = 0;
  std::vector<char> unbatched(n, 0);
  for (size_t i = 0; i < n; ++i) {
    Py_ssize_t length;
    const int r = is_unbatched(c.values[i].get(), &length);
    if (r < 0) return nullptr;
    unbatched[i] = static_cast<char>(r);
    if (!r && length > batch_size) batch_size = length;
  }
  if (batch_size <= 0) return as_container(c);
  if (o.pad) {  // repeat the unbatched values, one deep copy per sample
    for (size_t i = 0; i < n; ++i) {
      if (!unbatched[i]) continue;
      Ref repeated = Ref::steal(PyList_New(batch_size));
      if (!repeated) return nullptr;
      for (Py_ssize_t j = 0; j < batch_size; ++j) {
        PyObject* copy = deepcopy(c.values[i].get());
        if (copy == nullptr) return nullptr;
        PyList_SET_ITEM(repeated.get(), j, copy);
      }
      c.values[i] = std::move(repeated);
    }
  }
  // Every column as a list or tuple (iterating it as zip would), and the number of rows zip gives.
  std::vector<Ref> columns(n);
  Py_ssize_t rows = o.pad ? 0 : PY_SSIZE_T_MAX;
  for (size_t i = 0; i < n; ++i) {
    PyObject* v = c.values[i].get();
    columns[i] = (PyList_CheckExact(v) || PyTuple_CheckExact(v)) ? Ref::borrow(v) : Ref::steal(PySequence_List(v));
    if (!columns[i]) {
      if (unbatched[i] && PyErr_ExceptionMatches(PyExc_TypeError)) raise_unbatched_without_pad(guard, s, c, i);
      return nullptr;
    }
    const Py_ssize_t length = PySequence_Fast_GET_SIZE(columns[i].get());
    rows = o.pad ? (length > rows ? length : rows) : (length < rows ? length : rows);
  }
  Ref out = Ref::steal(PyList_New(rows));
  if (!out) return nullptr;
  // A new dict holds kDictKeysWithoutResize keys before its first resize (a new table, every key re-inserted).
  // With more keys, every row after the first starts as a copy of the first (its key table cloned as it is) and
  // gets its own values by replacement: the same keys in the same order, without the resize.
  const bool copy_first_row = c.mapping && n > kDictKeysWithoutResize;
  for (Py_ssize_t r = 0; r < rows; ++r) {
    Ref row;
    if (copy_first_row && r > 0) {
      row = Ref::steal(PyDict_Copy(PyList_GET_ITEM(out.get(), 0)));
    } else {
      row = Ref::steal(c.mapping ? PyDict_New() : PyList_New(static_cast<Py_ssize_t>(n)));
    }
    if (!row) return nullptr;
    for (size_t i = 0; i < n; ++i) {
      PyObject* column = columns[i].get();
      PyObject* value = r < PySequence_Fast_GET_SIZE(column) ? PySequence_Fast_GET_ITEM(column, r) : o.fill_value;
      if (c.mapping) {
        if (PyDict_SetItem(row.get(), c.keys[i].get(), value) < 0) return nullptr;
      } else {
        PyList_SET_ITEM(row.get(), static_cast<Py_ssize_t>(i), Py_NewRef(value));
      }
    }
    PyList_SET_ITEM(out.get(), r, row.release());
  }
  return out.release();
}

// A dict, exactly: its items snapshotted first, so that nothing the walk calls can change them under it.
PyObject* decollate_dict(PyObject* obj, const Options& o, State& s) {
  PathGuard guard(s, obj, Step::kKey);
  if (!guard.ok()) return nullptr;
  Columns c;
  c.mapping = true;
  std::vector<Ref> values;
  const Py_ssize_t size = PyDict_GET_SIZE(obj);
  c.keys.reserve(size);
  values.reserve(size);
  Py_ssize_t pos = 0;
  PyObject *key, *value;
  while (PyDict_Next(obj, &pos, &key, &value)) {
    c.keys.push_back(Ref::borrow(key));
    values.push_back(Ref::borrow(value));
  }
  c.values.reserve(size);
  for (size_t i = 0; i < values.size(); ++i) {
    guard.at_key(c.keys[i].get());
    c.values.push_back(Ref::steal(decollate(values[i].get(), o, s)));
    if (!c.values.back()) return nullptr;
  }
  return zip_columns(c, o, s, guard);
}

// Any other Mapping: `{key: decollate(obj[key]) for key in obj}`.
PyObject* decollate_mapping(PyObject* obj, const Options& o, State& s) {
  PathGuard guard(s, obj, Step::kKey);
  if (!guard.ok()) return nullptr;
  Ref deco = Ref::steal(PyDict_New());
  Ref it = Ref::steal(PyObject_GetIter(obj));
  if (!deco || !it) return nullptr;
  for (;;) {
    Ref key = Ref::steal(PyIter_Next(it.get()));
    if (!key) {
      if (PyErr_Occurred()) return nullptr;
      break;
    }
    guard.at_key(key.get());
    Ref value = Ref::steal(PyObject_GetItem(obj, key.get()));
    Ref result = value ? Ref::steal(decollate(value.get(), o, s)) : Ref();
    if (!result || PyDict_SetItem(deco.get(), key.get(), result.get()) < 0) return nullptr;
  }
  Columns c;
  c.mapping = true;
  Py_ssize_t pos = 0;
  PyObject *key, *value;
  while (PyDict_Next(deco.get(), &pos, &key, &value)) {
    c.keys.push_back(Ref::borrow(key));
    c.values.push_back(Ref::borrow(value));
  }
  return zip_columns(c, o, s, guard);
}

// A list or a tuple, exactly (indexed as list iteration does, re-reading the length each step).
PyObject* decollate_sequence(PyObject* obj, const Options& o, State& s) {
  PathGuard guard(s, obj, Step::kIndex);
  if (!guard.ok()) return nullptr;
  Columns c;
  const bool is_list = PyList_CheckExact(obj);
  c.values.reserve(is_list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj));
  for (Py_ssize_t i = 0; i < (is_list ? PyList_GET_SIZE(obj) : PyTuple_GET_SIZE(obj)); ++i) {
    guard.at_index(i);
    Ref item = Ref::borrow(is_list ? PyList_GET_ITEM(obj, i) : PyTuple_GET_ITEM(obj, i));
    c.values.push_back(Ref::steal(decollate(item.get(), o, s)));
    if (!c.values.back()) return nullptr;
  }
  return zip_columns(c, o, s, guard);
}

// Any other Iterable: `[decollate(item) for item in obj]`.
PyObject* decollate_iterable(PyObject* obj, const Options& o, State& s) {
  PathGuard guard(s, obj, Step::kIndex);
  if (!guard.ok()) return nullptr;
  Ref it = Ref::steal(PyObject_GetIter(obj));
  if (!it) return nullptr;
  Columns c;
  for (Py_ssize_t i = 0;; ++i) {
    Ref item = Ref::steal(PyIter_Next(it.get()));
    if (!item) {
      if (PyErr_Occurred()) return nullptr;
      break;
    }
    guard.at_index(i);
    c.values.push_back(Ref::steal(decollate(item.get(), o, s)));
    if (!c.values.back()) return nullptr;
  }
  return zip_columns(c, o, s, guard);
}

// decollate_batch's dispatch, in MONAI's order; the exact builtin types go first, where every earlier test of
// MONAI's is known to be false.
PyObject* decollate(PyObject* obj, const Options& o, State& s) {
  PyTypeObject* type = Py_TYPE(obj);
  if (type == &PyDict_Type) return decollate_dict(obj, o, s);
  if (type == &PyList_Type || type == &PyTuple_Type) return decollate_sequence(obj, o, s);
  if (obj == Py_None || PyFloat_Check(obj) || PyLong_Check(obj) || PyUnicode_Check(obj) || PyBytes_Check(obj)) {
    return Py_NewRef(obj);
  }
  if (type == reinterpret_cast<PyTypeObject*>(g.tensor_type)) {
    const Py_ssize_t ndim = tensor_ndim(obj);
    if (ndim < 0) return nullptr;
    if (ndim == 0) return o.detach ? PyObject_CallMethodNoArgs(obj, g.names.item) : Py_NewRef(obj);
    return decollate_tensor(obj, ndim, o, s);
  }
  if (monai.meta_tensor != nullptr && type == reinterpret_cast<PyTypeObject*>(monai.meta_tensor)) {
    const int direct = meta_dispatch(s);  // else its ndim and unbind would each run MetaTensor.__torch_function__
    if (direct != 0) return direct < 0 ? nullptr : decollate_meta_tensor(obj, o, s);
  }
  const int scalar = is_numpy_scalar(obj);
  if (scalar != 0) return scalar < 0 ? nullptr : Py_NewRef(obj);
  const int zero_dim = is_zero_dim_with_item(obj);
  if (zero_dim < 0) return nullptr;
  if (zero_dim) return o.detach ? PyObject_CallMethodNoArgs(obj, g.names.item) : Py_NewRef(obj);
  const int tensor = PyObject_IsInstance(obj, g.tensor_type);
  if (tensor < 0) return nullptr;
  if (tensor) {
    const Py_ssize_t ndim = tensor_ndim(obj);
    if (ndim < 0) return PyErr_Occurred() ? nullptr : decollate_tensor_generic(obj, o, s);
    return decollate_tensor(obj, ndim, o, s);
  }
  const int mapping = PyObject_IsInstance(obj, g.mapping_abc);
  if (mapping < 0) return nullptr;
  if (mapping) return decollate_mapping(obj, o, s);
  const int iterable = PyObject_IsInstance(obj, g.iterable_abc);
  if (iterable < 0) return nullptr;
  if (iterable) return decollate_iterable(obj, o, s);
  return raise_not_decollatable(s, obj);
}

// ---------------------------------------------------------------------------------------------------------------
// Set-up.

bool intern_all(Names& n) {
  struct Entry {
    PyObject** slot;
    const char* text;
  };
  const Entry entries[] = {
      {&n.ndim, "ndim"},
      {&n.item, "item"},
      {&n.detach, "detach"},
      {&n.tolist, "tolist"},
      {&n.as_subclass, "as_subclass"},
      {&n.dunder_dict, "__dict__"},
      {&n.dunder_class, "__class__"},
      {&n.enter, "__enter__"},
      {&n.exit, "__exit__"},
      {&n.requires_grad, "requires_grad"},
      {&n.dunder_module, "__module__"},
      {&n.dunder_qualname, "__qualname__"},
      {&n.numpy, "numpy"},
      {&n.shape, "shape"},
      {&n.layout, "layout"},
      {&n.dtype, "dtype"},
      {&n.is_nested, "is_nested"},
      {&n.meta, "meta"},
      {&n.is_batch, "is_batch"},
      {&n.applied_operations, "applied_operations"},
      {&n.private_meta, "_meta"},
      {&n.private_is_batch, "_is_batch"},
      {&n.private_applied_operations, "_applied_operations"},
      {&n.track_meta, "_TRACK_META"},
      {&n.meta_tensor_module, "monai.data.meta_tensor"},
      {&n.meta_obj_module, "monai.data.meta_obj"},
      {&n.enums_module, "monai.utils.enums"},
      {&n.meta_tensor_class, "MetaTensor"},
      {&n.meta_obj_class, "MetaObj"},
      {&n.trace_keys_class, "TraceKeys"},
      {&n.none_key, "NONE"},
  };
  for (const Entry& e : entries) {
    *e.slot = PyUnicode_InternFromString(e.text);
    if (*e.slot == nullptr) return false;
  }
  return true;
}

PyObject* import_attr(const char* module, const char* attr) {
  Ref m = Ref::steal(PyImport_ImportModule(module));
  return m ? PyObject_GetAttrString(m.get(), attr) : nullptr;
}

bool init_torch() {
  Ref torch = Ref::steal(PyImport_ImportModule("torch"));
  if (!torch) return false;
  g.tensor_type = PyObject_GetAttrString(torch.get(), "Tensor");
  g.unbind = PyObject_GetAttrString(torch.get(), "unbind");
  g.strided = PyObject_GetAttrString(torch.get(), "strided");
  g.tf_enabled = import_attr("torch._C", "_is_torch_function_enabled");
  g.tf_mode_enabled = import_attr("torch._C", "_is_torch_function_mode_enabled");
  g.disable_subclass = import_attr("torch._C", "DisableTorchFunctionSubclass");
  if (!g.tensor_type || !g.unbind || !g.strided || !g.tf_enabled || !g.tf_mode_enabled || !g.disable_subclass) {
    return false;
  }
  if (!PyType_Check(g.tensor_type)) {
    PyErr_SetString(PyExc_ImportError, "hotloop.collate._decollate: torch.Tensor is not a type");
    return false;
  }
  const char* dtypes[] = {"bool",    "uint8",    "int8",    "int16",     "int32",     "int64",
                          "float16", "bfloat16", "float32", "float64",   "complex64", "complex128"};
  for (const char* name : dtypes) {
    PyObject* dtype = PyObject_GetAttrString(torch.get(), name);
    if (dtype == nullptr) return false;
    g.tolist_dtypes.push_back(dtype);
  }
  return true;
}

}  // namespace

bool init_decollate() {
  if (!intern_all(g.names)) return false;
  g.zero = PyLong_FromLong(0);
  g.dim_kwnames = Py_BuildValue("(s)", "dim");
  g.mapping_abc = import_attr("collections.abc", "Mapping");
  g.iterable_abc = import_attr("collections.abc", "Iterable");
  g.sized_abc = import_attr("collections.abc", "Sized");
  g.deepcopy = import_attr("copy", "deepcopy");
  if (!g.zero || !g.dim_kwnames || !g.mapping_abc || !g.iterable_abc || !g.sized_abc || !g.deepcopy) return false;
  return init_torch();
}

PyObject* decollate_batch(PyObject* batch, PyObject* detach, PyObject* pad, PyObject* fill_value) {
  const int detach_flag = PyObject_IsTrue(detach);
  if (detach_flag < 0) return nullptr;
  const int pad_flag = PyObject_IsTrue(pad);
  if (pad_flag < 0) return nullptr;
  if (!refresh_monai()) return nullptr;
  State state;
  return decollate(batch, Options{detach_flag != 0, pad_flag != 0, fill_value}, state);
}

}  // namespace hotloop
