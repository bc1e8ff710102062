// Python bindings of the kernels in lstm.cpp. The torch.library custom ops (schemas, fake
// implementations, autograd) are defined in ops.py on top of these functions.

#include <torch/extension.h>

#include <atomic>
#include <optional>
#include <vector>

using at::Tensor;
using OptTensor = std::optional<Tensor>;

std::vector<Tensor> lstm_forward(const Tensor& x, const Tensor& h0, const Tensor& c0,
                                 const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                                 const OptTensor& b_hh, const OptTensor& w_hr,
                                 const OptTensor& w_ci, const OptTensor& w_cf,
                                 const OptTensor& w_co, const OptTensor& ln_ih,
                                 const OptTensor& ln_hh, const OptTensor& ln_c_weight,
                                 const OptTensor& ln_c_bias, const OptTensor& zoneout_h,
                                 const OptTensor& zoneout_c, const OptTensor& recurrent_mask,
                                 const OptTensor& lengths, bool forget_gate, bool return_states,
                                 bool save);

std::vector<Tensor> lstm_backward(
    const OptTensor& grad_output, const OptTensor& grad_h_n, const OptTensor& grad_c_n,
    const OptTensor& grad_records, const Tensor& x, const Tensor& h0, const Tensor& c0,
    const Tensor& output, const Tensor& gates, const Tensor& cells, const OptTensor& c_states,
    const OptTensor& ln_hw, const OptTensor& ln_stats, const Tensor& w_ih, const Tensor& w_hh,
    bool has_bias, const OptTensor& w_hr, const OptTensor& w_ci, const OptTensor& w_cf,
    const OptTensor& w_co, const OptTensor& ln_ih, const OptTensor& ln_hh,
    const OptTensor& ln_c_weight, const OptTensor& ln_c_bias, const OptTensor& zoneout_h,
    const OptTensor& zoneout_c, const OptTensor& recurrent_mask, const OptTensor& lengths,
    bool forget_gate, bool need_dx);

std::vector<Tensor> rnn_forward(const Tensor& x, const Tensor& h0, const Tensor& w_ih,
                                const Tensor& w_hh, const OptTensor& b_ih, const OptTensor& b_hh,
                                const OptTensor& lengths, bool relu);

std::vector<Tensor> rnn_backward(const OptTensor& grad_output, const OptTensor& grad_h_n,
                                 const Tensor& x, const Tensor& h0, const Tensor& output,
                                 const Tensor& w_ih, const Tensor& w_hh, const OptTensor& lengths,
                                 bool relu, bool has_bias, bool need_dx);

at::Tensor bernoulli_mask(int64_t seed, std::vector<int64_t> shape, double p,
                          at::ScalarType dtype);

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
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("rnn_forward", &rnn_forward);
  m.def("rnn_backward", &rnn_backward);
  m.def("parallel_threads", &parallel_threads);
  m.def("bernoulli_mask", &bernoulli_mask);
}
