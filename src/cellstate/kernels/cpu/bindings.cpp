// Python bindings of the entry points declared in entry_points.h. The torch.library custom ops
// (schemas, fake implementations, autograd) are defined in ops.py on top of these functions.
//
// Each entry point is called from Python with its op's arguments in order; the argument list of
// entry_points.h unpacks them into the entry point's struct and names them (argument_lists).

#include <torch/extension.h>

#include <atomic>
#include <map>
#include <string>
#include <vector>

#include "entry_points.h"

namespace py = pybind11;

namespace {

template <typename T>
const char* schema_type();
template <>
const char* schema_type<Tensor>() { return "Tensor"; }
template <>
const char* schema_type<OptTensor>() { return "Tensor?"; }
template <>
const char* schema_type<bool>() { return "bool"; }

// Argument k of a call, converted to T; an error names the entry point, the argument and what came.
template <typename T>
T argument(const py::args& args, size_t k, const char* function, const char* name) {
  const py::handle value = args[k];
  try {
    return value.cast<T>();
  } catch (const py::cast_error&) {
    throw py::type_error(std::string("cellstate cpu kernel: ") + function + "'s argument " + name +
                         " must be " + schema_type<T>() + ", got " +
                         py::str(value.get_type().attr("__name__")).cast<std::string>());
  }
}

void check_count(const py::args& args, size_t expected, const char* function) {
  if (args.size() != expected) {
    throw py::type_error(std::string("cellstate cpu kernel: ") + function + " takes " +
                         std::to_string(expected) + " arguments, got " +
                         std::to_string(args.size()));
  }
}

#define CELLSTATE_COUNT(type, name) +1
#define CELLSTATE_UNPACK(type, name) argument<type>(args, k++, op_name, #name),
#define CELLSTATE_DESCRIBE(type, name) std::string(schema_type<type>()) + " " #name,

// Binds `function` (taking a Struct) to Python as function(*arguments in LIST's order).
#define CELLSTATE_BIND(module, function, Struct, LIST)                \
  module.def(#function, [](const py::args& args) {                    \
    const char* op_name = #function;                                  \
    check_count(args, 0 LIST(CELLSTATE_COUNT), op_name);              \
    size_t k = 0;                                                     \
    return ::function(Struct{LIST(CELLSTATE_UNPACK)});                \
  });                                                                 \
  lists[#function] = std::vector<std::string>{LIST(CELLSTATE_DESCRIBE)};

}  // namespace

// How many threads an at::parallel_for of this library really runs on (at::get_num_threads() when
// it was compiled with OpenMP; 1 when it was not, however many threads torch is set to).
int64_t parallel_threads() {
  std::vector<std::atomic<bool>> seen(size_t(at::get_num_threads()));
  at::parallel_for(0, 1 << 16, 1, [&](int64_t, int64_t) {
    seen[size_t(at::get_thread_num())].store(true);
  });
  int64_t used = 0;
  for (const auto& flag : seen) used += flag.load();
  return used;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cellstate fused CPU kernels (use them through cellstate.kernels.cpu.ops)";
  std::map<std::string, std::vector<std::string>> lists;
  CELLSTATE_BIND(m, lstm_forward, LSTMForwardArgs, CELLSTATE_LSTM_FORWARD)
  CELLSTATE_BIND(m, lstm_backward, LSTMBackwardArgs, CELLSTATE_LSTM_BACKWARD)
  CELLSTATE_BIND(m, rnn_forward, RNNForwardArgs, CELLSTATE_RNN_FORWARD)
  CELLSTATE_BIND(m, rnn_backward, RNNBackwardArgs, CELLSTATE_RNN_BACKWARD)
  // {entry point: its arguments as "<schema type> <name>"}, to compare with the ops' schemas
  m.def("argument_lists", [lists] { return lists; });
  m.def("parallel_threads", &parallel_threads);
  m.def("bernoulli_mask", &bernoulli_mask);
  m.def("bf16_product_counts", &bf16_product_counts);
  m.def("bf16_product_support", &bf16_product_support);
  m.def("bf16_cell_activations", &bf16_cell_activations);
  m.def("set_native_bf16", &set_native_bf16);
  m.def("bf16_round_bits", &bf16_round_bits);
}
