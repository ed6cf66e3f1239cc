// Compiled CPU kernels for the element-wise work of training and decoding: the recurrent loops' GRU cell and
// additive attention and its context (one pass per step instead of one ATen call per operation), and beam search's
// step (attention over one copy of a sentence's keys for all its beams, the
// mixture of its projected values, and the log-sum-exp and block maxima of the logits in one read). A GRU layer's
// whole loop (gru_layer_forward / _backward / _inference) runs here too, its per-step products through PyTorch's own
// oneDNN or BLAS: no Python between the steps, and an encoder's two directions side by side on two threads.
//
// Built on first use by s2s_attn/fast/kernels.py (torch.utils.cpp_extension.load) and registered as
// torch.ops.s2s_attn.*. Every function reads and writes float32 CPU tensors given to it (2-D, rows x columns,
// unit column stride, any row stride, unless it says otherwise), allocates nothing but scratch and the layer loops'
// products, and computes the formulas of the Python code beside each call (s2s_attn/fast/recurrence.py, step.py,
// s2s_attn/decoding/beam.py), the path on other devices and dtypes. exp is
// ATen's vector exp (SLEEF, 1 ulp; the logits' sum of exponentials uses exp_nonpositive, a degree-6 polynomial
// scaled with AVX-512's scalef, within float rounding of exp and cheaper than ATen's exps); tanh is SLEEF's 3.5-ulp
// version, cheaper than the 1-ulp one (the attention's energies are 64 x 12 x 512 tanh per step). Decoding's
// kernels, which no gradient goes through, use a rational tanh (tanh<true>, within 3e-7 of tanh) and sigmoid from
// it, cheaper still. Training keeps SLEEF's: with the rational one the attention's gradients came out further from
// float64 than the Python loop's (tests/unit/test_kernels.py).
//
// Shapes: rows R (batch, or directions x batch), hidden H, gates 3H in the order r, z, n (as nn.GRU);
// source positions S, attention size A.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

using at::Tensor;
using Vec = at::vec::Vectorized<float>;

// tanh and sigmoid for training (kFast false: gradients flow through them) or for decoding (kFast true).
// Training: SLEEF's 3.5-ulp tanh and ATen's sigmoid, 1 / (1 + exp(-x)). Decoding: tanh as a rational function,
// x P(x^2) / Q(x^2) on x clamped to +-7.905 (Eigen's fast float tanh; within 3e-7 of tanh, reaching 1 - 3e-7 at the
// clamp), cheaper than SLEEF's, and sigmoid(x) = (1 + tanh(x / 2)) / 2 from it.
template <bool kFast>
inline Vec tanh(const Vec& a) {
  if constexpr (kFast) {
    const Vec x = at::vec::clamp(a, Vec(-7.90531110763549805f), Vec(7.90531110763549805f));
    const Vec x2 = x * x;
    Vec p = at::vec::fmadd(x2, Vec(-2.76076847742355e-16f), Vec(2.00018790482477e-13f));
    p = at::vec::fmadd(x2, p, Vec(-8.60467152213735e-11f));
    p = at::vec::fmadd(x2, p, Vec(5.12229709037114e-08f));
    p = at::vec::fmadd(x2, p, Vec(1.48572235717979e-05f));
    p = at::vec::fmadd(x2, p, Vec(6.37261928875436e-04f));
    p = at::vec::fmadd(x2, p, Vec(4.89352455891786e-03f));
    Vec q = at::vec::fmadd(x2, Vec(1.19825839466702e-06f), Vec(1.18534705686654e-04f));
    q = at::vec::fmadd(x2, q, Vec(2.26843463243900e-03f));
    q = at::vec::fmadd(x2, q, Vec(4.89352518554385e-03f));
    return (x * p) / q;
  } else {
#if defined(CPU_CAPABILITY_AVX512)
    return Vec(Sleef_tanhf16_u35(a));
#elif defined(CPU_CAPABILITY_AVX2)
    return Vec(Sleef_tanhf8_u35(a));
#else
    return a.tanh();
#endif
  }
}

template <bool kFast>
inline Vec sigmoid(const Vec& x) {
  if constexpr (kFast) {
    const Vec half(0.5f);
    return at::vec::fmadd(half, tanh<true>(x * half), half);
  } else {
    return (Vec(1.0f) + x.neg().exp()).reciprocal();
  }
}

// a[0:count] as a vector (the tail of a row has count < Vec::size())
inline Vec load(const float* a, int64_t count) {
  return count == Vec::size() ? Vec::loadu(a) : Vec::loadu(a, count);
}

inline void store(const Vec& v, float* a, int64_t count) {
  if (count == Vec::size()) {
    v.store(a);
  } else {
    v.store(a, count);
  }
}

// A 2-D float32 CPU tensor of `rows` rows and `cols` columns, unit column stride.
const float* rows_of(const Tensor& t, int64_t rows, int64_t cols, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
  TORCH_CHECK(t.dim() == 2 && t.size(0) == rows && t.size(1) == cols && t.stride(1) == 1, name,
              " must be (", rows, ", ", cols, ") with unit column stride, got ", t.sizes(), " strides ", t.strides());
  return t.const_data_ptr<float>();
}

float* rows_of_mut(Tensor& t, int64_t rows, int64_t cols, const char* name) {
  rows_of(t, rows, cols, name);
  return t.data_ptr<float>();
}

const bool* mask_of(const std::optional<Tensor>& mask, int64_t rows) {
  if (!mask.has_value()) {
    return nullptr;
  }
  TORCH_CHECK(mask->scalar_type() == at::kBool && mask->is_contiguous() && mask->numel() == rows,
              "mask must be a contiguous bool tensor of ", rows, " elements");
  return mask->const_data_ptr<bool>();
}

constexpr int64_t kRowsPerTask = 4;

// One GRU cell update from its input gates gi = W_ih x + b_ih and hidden gates gh = W_hh h + b_hh, both (R, 3H):
//   r = sigmoid(gi_r + gh_r), z = sigmoid(gi_z + gh_z), n = tanh(gi_n + r * gh_n), h' = n + z * (h - n)
// writes h' (R, H) and, if given (the backward needs them), rz (R, 2H), n (R, H) and hidden_n (R, H) = gh_n.
// Rows whose mask is false keep their state (h' = h); their rz and n are computed all the same.
// kFast: decoding's tanh and sigmoid (see tanh).
template <bool kFast>
void gru_update(const Tensor& gi, const Tensor& gh, const Tensor& h, std::optional<Tensor> rz,
                std::optional<Tensor> n, Tensor h_new, std::optional<Tensor> hidden_n,
                const std::optional<Tensor>& mask) {
  const int64_t rows = h.size(0), size = h.size(1);
  const float* gi_p = rows_of(gi, rows, 3 * size, "gi");
  const float* gh_p = rows_of(gh, rows, 3 * size, "gh");
  const float* h_p = rows_of(h, rows, size, "h");
  float* rz_p = rz.has_value() ? rows_of_mut(*rz, rows, 2 * size, "rz") : nullptr;
  float* n_p = n.has_value() ? rows_of_mut(*n, rows, size, "n") : nullptr;
  float* out_p = rows_of_mut(h_new, rows, size, "h_new");
  float* hn_p = hidden_n.has_value() ? rows_of_mut(*hidden_n, rows, size, "hidden_n") : nullptr;
  const bool* keep = mask_of(mask, rows);
  const int64_t gi_s = gi.stride(0), gh_s = gh.stride(0), h_s = h.stride(0), rz_s = rz_p ? rz->stride(0) : 0;
  const int64_t n_s = n_p ? n->stride(0) : 0, out_s = h_new.stride(0), hn_s = hn_p ? hidden_n->stride(0) : 0;
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* gib = gi_p + b * gi_s;
      const float* ghb = gh_p + b * gh_s;
      const float* hb = h_p + b * h_s;
      const bool stays = keep != nullptr && !keep[b];
      for (int64_t j = 0; j < size; j += Vec::size()) {
        const int64_t c = std::min<int64_t>(Vec::size(), size - j);
        const Vec r = sigmoid<kFast>(load(gib + j, c) + load(ghb + j, c));
        const Vec z = sigmoid<kFast>(load(gib + size + j, c) + load(ghb + size + j, c));
        const Vec gh_n = load(ghb + 2 * size + j, c);
        const Vec cand = tanh<kFast>(load(gib + 2 * size + j, c) + r * gh_n);
        const Vec prev = load(hb + j, c);
        if (rz_p != nullptr) {
          store(r, rz_p + b * rz_s + j, c);
          store(z, rz_p + b * rz_s + size + j, c);
        }
        if (n_p != nullptr) {
          store(cand, n_p + b * n_s + j, c);
        }
        store(stays ? prev : cand + z * (prev - cand), out_p + b * out_s + j, c);
        if (hn_p != nullptr) {
          store(gh_n, hn_p + b * hn_s + j, c);
        }
      }
    }
  });
}

// Training's GRU step (the functions gradients flow through): see gru_update.
void gru_forward(const Tensor& gi, const Tensor& gh, const Tensor& h, std::optional<Tensor> rz,
                 std::optional<Tensor> n, Tensor h_new, std::optional<Tensor> hidden_n,
                 const std::optional<Tensor>& mask) {
  gru_update<false>(gi, gh, h, std::move(rz), std::move(n), std::move(h_new), std::move(hidden_n), mask);
}

// Decoding's GRU step (no gradient): h_new (R, H) from gi, gh (R, 3H) and h (R, H), with tanh<true>, sigmoid<true>.
void gru_step(const Tensor& gi, const Tensor& gh, const Tensor& h, Tensor h_new) {
  gru_update<true>(gi, gh, h, std::nullopt, std::nullopt, std::move(h_new), std::nullopt, std::nullopt);
}

// The backward of gru_forward for one step. dh (R, H) is the gradient of h' (plus d_out, if given, the gradient
// of the step's output). Writes the gradients of the input gates d_gi (R, 3H) = (d_r, d_z, d_n), of the hidden
// gates d_gh (R, 3H) = (d_r, d_z, d_n * r), and carry (R, H), the part of dh/dh that does not go through W_hh:
// dh * z. Rows whose mask is false passed their state on: zero gate gradients, carry = dh (d_out not added).
//   d_n = dh (1 - z) (1 - n^2), d_r = d_n gh_n r (1 - r), d_z = dh (h - n) z (1 - z)
void gru_backward(const Tensor& dh, const std::optional<Tensor>& d_out, const Tensor& rz, const Tensor& n,
                  const Tensor& h, const Tensor& hidden_n, const std::optional<Tensor>& mask, Tensor d_gi,
                  Tensor d_gh, Tensor carry) {
  const int64_t rows = h.size(0), size = h.size(1);
  const float* dh_p = rows_of(dh, rows, size, "dh");
  const float* dout_p = d_out.has_value() ? rows_of(*d_out, rows, size, "d_out") : nullptr;
  const float* rz_p = rows_of(rz, rows, 2 * size, "rz");
  const float* n_p = rows_of(n, rows, size, "n");
  const float* h_p = rows_of(h, rows, size, "h");
  const float* hn_p = rows_of(hidden_n, rows, size, "hidden_n");
  float* dgi_p = rows_of_mut(d_gi, rows, 3 * size, "d_gi");
  float* dgh_p = rows_of_mut(d_gh, rows, 3 * size, "d_gh");
  float* carry_p = rows_of_mut(carry, rows, size, "carry");
  const bool* keep = mask_of(mask, rows);
  const int64_t dh_s = dh.stride(0), dout_s = dout_p ? d_out->stride(0) : 0, rz_s = rz.stride(0);
  const int64_t n_s = n.stride(0), h_s = h.stride(0), hn_s = hidden_n.stride(0), dgi_s = d_gi.stride(0);
  const int64_t dgh_s = d_gh.stride(0), carry_s = carry.stride(0);
  const Vec one(1.0f), zero(0.0f);
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* dgib = dgi_p + b * dgi_s;
      float* dghb = dgh_p + b * dgh_s;
      const bool stays = keep != nullptr && !keep[b];
      for (int64_t j = 0; j < size; j += Vec::size()) {
        const int64_t c = std::min<int64_t>(Vec::size(), size - j);
        Vec g = load(dh_p + b * dh_s + j, c);
        if (stays) {
          store(zero, dgib + j, c);
          store(zero, dgib + size + j, c);
          store(zero, dgib + 2 * size + j, c);
          store(zero, dghb + j, c);
          store(zero, dghb + size + j, c);
          store(zero, dghb + 2 * size + j, c);
          store(g, carry_p + b * carry_s + j, c);
          continue;
        }
        if (dout_p != nullptr) {
          g = g + load(dout_p + b * dout_s + j, c);
        }
        const Vec r = load(rz_p + b * rz_s + j, c), z = load(rz_p + b * rz_s + size + j, c);
        const Vec cand = load(n_p + b * n_s + j, c);
        const Vec d_n = (g - g * z) * (one - cand * cand);
        const Vec d_r = d_n * load(hn_p + b * hn_s + j, c) * r * (one - r);
        const Vec d_z = g * (load(h_p + b * h_s + j, c) - cand) * z * (one - z);
        store(d_r, dgib + j, c);
        store(d_z, dgib + size + j, c);
        store(d_n, dgib + 2 * size + j, c);
        store(d_r, dghb + j, c);
        store(d_z, dghb + size + j, c);
        store(d_n * r, dghb + 2 * size + j, c);
        store(g * z, carry_p + b * carry_s + j, c);
      }
    }
  });
}

// bias + x @ weight.T, float32 (s2s_attn/fast/gemm.py's linear, from C++): oneDNN's mkldnn::_linear_pointwise
// (through the dispatcher: it is an op of PyTorch's own library) where `onednn`, else the BLAS (at::addmm).
// x (M, K); weight (N, K), contiguous or the transpose of a contiguous matrix; bias (N,) or none -> (M, N).
Tensor linear(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, bool onednn) {
  if (!onednn) {
    return bias.has_value() ? at::addmm(*bias, x, weight.t()) : at::mm(x, weight.t());
  }
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("mkldnn::_linear_pointwise", "")
                       .typed<Tensor(const Tensor&, const Tensor&, const std::optional<Tensor>&, c10::string_view,
                                     c10::List<std::optional<at::Scalar>>, std::optional<c10::string_view>)>();
  return op.call(x, weight, bias, "none", c10::List<std::optional<at::Scalar>>(), c10::string_view(""));
}

// out = addend + x @ weight.T (as linear, addend (M, N)), written into out (M, N).
void linear_add_into(Tensor out, const Tensor& x, const Tensor& weight, const Tensor& addend, bool onednn) {
  if (!onednn) {
    at::addmm_out(out, addend, x, weight.t());
    return;
  }
  at::add_out(out, linear(x, weight, std::nullopt, true), addend);
}

// Runs task(d) for each direction d < directions: with two directions, one on each of two threads (their products
// then run single-threaded, side by side: the encoder's (64, 256) x (256, 768) products are too small to keep two
// threads busy each); otherwise in this thread. The tasks' ATen calls go below autograd (the dispatch state is
// per thread, so each task sets it).
template <typename Task>
void for_each_direction(int64_t directions, const Task& task) {
  if (directions == 2 && at::get_num_threads() >= 2 && !at::in_parallel_region()) {
    at::parallel_for(0, 2, 1, [&](int64_t begin, int64_t end) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      for (int64_t d = begin; d < end; ++d) {
        task(d);
      }
    });
    return;
  }
  for (int64_t d = 0; d < directions; ++d) {
    task(d);
  }
}

// The block [step][d] (B, ...) of a per-step, per-direction tensor (S, D, B, ...), or none.
std::optional<Tensor> at_step(const std::optional<Tensor>& t, int64_t step, int64_t d) {
  return t.has_value() ? std::optional<Tensor>((*t)[step][d]) : std::nullopt;
}

// A layer's step_mask ((S, D, B) or (S, D, B, 1) bool, contiguous) viewed as (S, D, B), or none.
std::optional<Tensor> step_mask_view(const std::optional<Tensor>& step_mask, int64_t steps, int64_t directions,
                                     int64_t batch) {
  if (!step_mask.has_value()) {
    return std::nullopt;
  }
  TORCH_CHECK(step_mask->is_contiguous() && step_mask->numel() == steps * directions * batch,
              "step_mask must be a contiguous (S, D, B) bool tensor");
  return step_mask->view({steps, directions, batch});
}

// A whole GRU layer's forward loop (s2s_attn/fast/recurrence.py, GRULayer), one or two directions, without Python
// between the steps. input_gates (S, D, B, G) = W_ih x + b_ih, the backward direction's steps in reverse order;
// hh_weight (D, G, H); hh_bias (D, G); step_mask (S, D, B) bool, whether step t is a real position of the row (none:
// all are); states (S + 1, D, B, H) with states[0] set: states[t + 1] is written, the state after step t (kept
// where the mask is false). rz (S, D, B, 2H), n (S, D, B, H) and hidden_n (S, D, B, H), when given, record what the
// backward needs (gru_update). Per step and direction: gh = W_hh h + b_hh (one product), then gru_update.
// kFast: decoding's tanh and sigmoid (no gradient flows).
template <bool kFast>
void gru_layer(const Tensor& input_gates, const Tensor& hh_weight, const Tensor& hh_bias,
               const std::optional<Tensor>& step_mask, Tensor states, std::optional<Tensor> rz,
               std::optional<Tensor> n, std::optional<Tensor> hidden_n, bool onednn) {
  TORCH_CHECK(input_gates.dim() == 4 && states.dim() == 4, "input_gates must be (S, D, B, G), states (S + 1, D, B, H)");
  const int64_t steps = input_gates.size(0), directions = input_gates.size(1), batch = input_gates.size(2);
  const int64_t size = states.size(3);
  TORCH_CHECK(states.size(0) == steps + 1 && states.size(1) == directions && states.size(2) == batch &&
                  input_gates.size(3) == 3 * size && hh_weight.dim() == 3 && hh_weight.size(0) == directions &&
                  hh_bias.dim() == 2 && hh_bias.size(0) == directions,
              "gru_layer: shapes do not match: input_gates ", input_gates.sizes(), ", states ", states.sizes(),
              ", hh_weight ", hh_weight.sizes(), ", hh_bias ", hh_bias.sizes());
  const std::optional<Tensor> mask = step_mask_view(step_mask, steps, directions, batch);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  for (int64_t t = 0; t < steps; ++t) {
    for_each_direction(directions, [&](int64_t d) {
      const Tensor h = states[t][d];  // (B, H)
      const Tensor gh = linear(h, hh_weight[d], hh_bias[d], onednn);  // (B, G)
      gru_update<kFast>(input_gates[t][d], gh, h, at_step(rz, t, d), at_step(n, t, d), states[t + 1][d],
                        at_step(hidden_n, t, d), at_step(mask, t, d));
    });
  }
}

// Training's layer forward (gradients flow through it): see gru_layer.
void gru_layer_forward(const Tensor& input_gates, const Tensor& hh_weight, const Tensor& hh_bias,
                       const std::optional<Tensor>& step_mask, Tensor states, std::optional<Tensor> rz,
                       std::optional<Tensor> n, std::optional<Tensor> hidden_n, bool onednn) {
  gru_layer<false>(input_gates, hh_weight, hh_bias, step_mask, std::move(states), std::move(rz), std::move(n),
                   std::move(hidden_n), onednn);
}

// Decoding's layer (no gradient; decoding's tanh and sigmoid, nothing recorded): see gru_layer.
void gru_layer_inference(const Tensor& input_gates, const Tensor& hh_weight, const Tensor& hh_bias,
                         const std::optional<Tensor>& step_mask, Tensor states, bool onednn) {
  gru_layer<true>(input_gates, hh_weight, hh_bias, step_mask, std::move(states), std::nullopt, std::nullopt,
                  std::nullopt, onednn);
}

// The backward of gru_layer_forward, from the last step to the first (GRULayer's backward): per step and direction
// gru_backward, then the gradient of the previous state dh = carry + d_gh W_hh (one product). previous (S, D, B, H)
// = states[:-1]; rz, n, hidden_n as recorded; d_outputs (S, D, B, H), the gradient of each step's output, or none;
// dh (D, B, H): on entry the gradient of the final states, on return that of the initial states. Writes d_gi and
// d_gh (S, D, B, G).
void gru_layer_backward(const Tensor& previous, const Tensor& rz, const Tensor& n, const Tensor& hidden_n,
                        const Tensor& hh_weight, const std::optional<Tensor>& step_mask,
                        const std::optional<Tensor>& d_outputs, Tensor dh, Tensor d_gi, Tensor d_gh, bool onednn) {
  TORCH_CHECK(previous.dim() == 4 && dh.dim() == 3 && d_gi.dim() == 4 && d_gh.dim() == 4,
              "gru_layer_backward: previous, d_gi, d_gh must be 4-D and dh 3-D");
  const int64_t steps = previous.size(0), directions = previous.size(1), batch = previous.size(2);
  const std::optional<Tensor> mask = step_mask_view(step_mask, steps, directions, batch);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const Tensor carry = at::empty_like(dh);  // (D, B, H)
  for (int64_t t = steps - 1; t >= 0; --t) {
    for_each_direction(directions, [&](int64_t d) {
      gru_backward(dh[d], at_step(d_outputs, t, d), rz[t][d], n[t][d], previous[t][d], hidden_n[t][d],
                   at_step(mask, t, d), d_gi[t][d], d_gh[t][d], carry[d]);
      linear_add_into(dh[d], d_gh[t][d], hh_weight[d].t(), carry[d], onednn);  // carry + d_gh W_hh: (B, H)
    });
  }
}

// Additive attention of one query row over one sentence's keys: scores_s = v . tanh(q + k_s) (each tanh written to
// energies + s * size when energies is not null), then weights w (S,) = the softmax of the scores over the real
// positions, exactly 0 where real[s] is false (all 0 when no position is real). scores: S floats of
// scratch. keys: row s at keys + s * key_stride.
template <bool kFast>
inline void attend_row(const float* q, const float* keys, int64_t key_stride, const bool* real,
                       const float* v, int64_t src, int64_t size, float* energies, float* w, float* scores) {
  float best = -std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s < src; ++s) {
    const float* ks = keys + s * key_stride;
    Vec acc(0.0f);
    for (int64_t j = 0; j < size; j += Vec::size()) {
      const int64_t c = std::min<int64_t>(Vec::size(), size - j);
      const Vec e = tanh<kFast>(load(q + j, c) + load(ks + j, c));
      if (energies != nullptr) {
        store(e, energies + s * size + j, c);
      }
      acc = at::vec::fmadd(e, load(v + j, c), acc);  // the tail's unused lanes load as 0
    }
    scores[s] = at::vec::vec_reduce_all<float>([](const Vec& x, const Vec& y) { return x + y; }, acc);
    if (real[s] && scores[s] > best) {
      best = scores[s];
    }
  }
  float total = 0.0f;
  for (int64_t s = 0; s < src; ++s) {
    w[s] = real[s] ? std::exp(scores[s] - best) : 0.0f;
    total += w[s];
  }
  for (int64_t s = 0; s < src; ++s) {
    w[s] = total > 0.0f ? w[s] / total : 0.0f;
  }
}

// Additive attention for one step: energies e_bs = tanh(q_b + k_bs) (B, S, A) and weights = the softmax over s of
// v . e_bs (B, S), exactly 0 where the mask is false (all 0 for a row with no real position).
// query (B, A); keys (B, S, A) contiguous; v (A,); mask (B, S) bool contiguous; energies (B, S, A) contiguous.
void additive_attention_forward(const Tensor& query, const Tensor& keys, const Tensor& v, const Tensor& mask,
                                Tensor energies, Tensor weights) {
  TORCH_CHECK(keys.dim() == 3 && keys.is_contiguous() && energies.is_contiguous() && energies.sizes() == keys.sizes(),
              "keys and energies must be contiguous (B, S, A) tensors of the same shape");
  const int64_t batch = keys.size(0), src = keys.size(1), size = keys.size(2);
  const float* q_p = rows_of(query, batch, size, "query");
  const float* k_p = rows_of(keys.view({batch * src, size}), batch * src, size, "keys");
  const float* v_p = rows_of(v.view({1, size}), 1, size, "v");
  Tensor energy_rows = energies.view({batch * src, size});
  float* e_p = rows_of_mut(energy_rows, batch * src, size, "energies");
  float* w_p = rows_of_mut(weights, batch, src, "weights");
  const bool* real = mask_of(mask, batch * src);
  const int64_t q_s = query.stride(0), w_s = weights.stride(0);
  at::parallel_for(0, batch, kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(src);
    for (int64_t b = begin; b < end; ++b) {
      attend_row<false>(q_p + b * q_s, k_p + b * src * size, size, real + b * src, v_p, src, size,
                 e_p + b * src * size, w_p + b * w_s, scores.data());
    }
  });
}

// Decoding's additive attention (beam search): query rows (R, A), R = N x width, row r attending over sentence
// r / width's keys (the beams of a sentence share one copy of its keys); weights (R, S) as in
// additive_attention_forward, the energies not kept. keys (N, S, A) and mask (N, S) may be views of larger buffers
// (unit stride in their last dimension).
void beam_additive_attention(const Tensor& query, const Tensor& keys, const Tensor& v, const Tensor& mask,
                             int64_t width, Tensor weights) {
  TORCH_CHECK(keys.dim() == 3 && keys.stride(2) == 1 && keys.device().is_cpu() && keys.scalar_type() == at::kFloat,
              "keys must be a float32 CPU (N, S, A) tensor with unit stride in its last dimension");
  TORCH_CHECK(mask.dim() == 2 && mask.scalar_type() == at::kBool && mask.stride(1) == 1 &&
                  mask.size(0) == keys.size(0) && mask.size(1) == keys.size(1),
              "mask must be an (N, S) bool tensor with unit stride in its last dimension");
  TORCH_CHECK(width >= 1, "width must be at least 1");
  const int64_t sentences = keys.size(0), src = keys.size(1), size = keys.size(2), rows = sentences * width;
  const float* q_p = rows_of(query, rows, size, "query");
  const float* v_p = rows_of(v.view({1, size}), 1, size, "v");
  float* w_p = rows_of_mut(weights, rows, src, "weights");
  const float* k_p = keys.const_data_ptr<float>();
  const bool* real = mask.const_data_ptr<bool>();
  const int64_t q_s = query.stride(0), w_s = weights.stride(0), k_s0 = keys.stride(0), k_s1 = keys.stride(1);
  const int64_t m_s0 = mask.stride(0);
  at::parallel_for(0, rows, kRowsPerTask, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(src);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / width;
      attend_row<true>(q_p + r * q_s, k_p + b * k_s0, k_s1, real + b * m_s0, v_p, src, size, nullptr, w_p + r * w_s,
                 scores.data());
    }
  });
}

constexpr int64_t kMixRows = 5;  // a beam of 5 in one pass

struct MixRows {  // up to kMixRows rows of beam_mix: their weights (S,), table rows and output rows
  const float* weights[kMixRows];
  const float* table[kMixRows];
  float* out[kMixRows];
};

// out[i] = table[i] + sum_s weights[i][s] x values[s, :] for R rows sharing each load of values (S, D), row s at
// values + s * value_stride
template <int R>
void mix_rows(const MixRows& rows, const float* values, int64_t value_stride, int64_t src, int64_t size) {
  constexpr int64_t kV = Vec::size();
  constexpr int kCols = 2;  // two vectors of columns per row: 10 accumulators for a beam of 5
  int64_t j = 0;
  for (; j + kCols * kV <= size; j += kCols * kV) {
    Vec a[R][kCols];
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < kCols; ++c) {
        a[i][c] = Vec::loadu(rows.table[i] + j + c * kV);
      }
    }
    for (int64_t s = 0; s < src; ++s) {
      const float* vs = values + s * value_stride + j;
      Vec x[kCols];
      for (int c = 0; c < kCols; ++c) {
        x[c] = Vec::loadu(vs + c * kV);
      }
      for (int i = 0; i < R; ++i) {
        const Vec w(rows.weights[i][s]);
        for (int c = 0; c < kCols; ++c) {
          a[i][c] = at::vec::fmadd(w, x[c], a[i][c]);
        }
      }
    }
    for (int i = 0; i < R; ++i) {
      for (int c = 0; c < kCols; ++c) {
        a[i][c].store(rows.out[i] + j + c * kV);
      }
    }
  }
  for (; j < size; j += kV) {
    const int64_t c = std::min<int64_t>(kV, size - j);
    for (int i = 0; i < R; ++i) {
      Vec acc = load(rows.table[i] + j, c);
      for (int64_t s = 0; s < src; ++s) {
        acc = at::vec::fmadd(Vec(rows.weights[i][s]), load(values + s * value_stride + j, c), acc);
      }
      store(acc, rows.out[i] + j, c);
    }
  }
}

// Decoding's mixture of projected values (beam search): out (R, D) = table[prev[r]] + sum_s weights[r, s] x
// values[r / width, s, :], R = N x width, the beams of a sentence sharing one copy of its values (N, S, D) (a view
// of a larger buffer is fine: unit stride in the last dimension). table (V, D): the step's part that depends
// only on the previous token (the embedding's products). One pass over a sentence's values for up to kMixRows of
// its rows (mix_rows) instead of a batched product and the lookups and sums after it.
void beam_mix(const Tensor& weights, const Tensor& values, int64_t width, const Tensor& table, const Tensor& prev,
              Tensor out) {
  TORCH_CHECK(values.dim() == 3 && values.stride(2) == 1 && values.device().is_cpu() &&
                  values.scalar_type() == at::kFloat,
              "values must be a float32 CPU (N, S, D) tensor with unit stride in its last dimension");
  TORCH_CHECK(width >= 1, "width must be at least 1");
  const int64_t sentences = values.size(0), src = values.size(1), size = values.size(2), rows = sentences * width;
  TORCH_CHECK(prev.scalar_type() == at::kLong && prev.is_contiguous() && prev.numel() == rows,
              "prev must be a contiguous int64 tensor of ", rows, " token ids");
  const float* w_p = rows_of(weights, rows, src, "weights");
  const float* t_p = rows_of(table, table.size(0), size, "table");
  float* out_p = rows_of_mut(out, rows, size, "out");
  const float* v_p = values.const_data_ptr<float>();
  const int64_t* prev_p = prev.const_data_ptr<int64_t>();
  const int64_t vocab = table.size(0), w_s = weights.stride(0), t_s = table.stride(0), out_s = out.stride(0);
  const int64_t v_s0 = values.stride(0), v_s1 = values.stride(1);
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(prev_p[r] >= 0 && prev_p[r] < vocab, "token id ", prev_p[r], " out of range for a table of ", vocab,
                " rows");
  }
  // a sentence's rows at a time, up to kMixRows of them sharing each load of its values (read once per sentence
  // from L2, not once per row); each row's sum runs in the same order as alone (table row, then s = 0, 1, ...)
  at::parallel_for(0, sentences, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* vb = v_p + b * v_s0;
      for (int64_t first = b * width; first < (b + 1) * width; first += kMixRows) {
        const int64_t count = std::min<int64_t>(kMixRows, (b + 1) * width - first);
        MixRows rows_here;
        for (int64_t i = 0; i < count; ++i) {
          const int64_t r = first + i;
          rows_here.weights[i] = w_p + r * w_s;
          rows_here.table[i] = t_p + prev_p[r] * t_s;
          rows_here.out[i] = out_p + r * out_s;
        }
        switch (count) {
          case 1: mix_rows<1>(rows_here, vb, v_s1, src, size); break;
          case 2: mix_rows<2>(rows_here, vb, v_s1, src, size); break;
          case 3: mix_rows<3>(rows_here, vb, v_s1, src, size); break;
          case 4: mix_rows<4>(rows_here, vb, v_s1, src, size); break;
          default: mix_rows<5>(rows_here, vb, v_s1, src, size); break;
        }
      }
    }
  });
}

// exp(x) for x <= 0 (the logits minus their maximum): x log2(e) = n + f, |f| <= 1/2, 2^f by a degree-6 polynomial,
// scaled by 2^n with AVX-512's scalef (which goes through the subnormals to 0 as exp does; x log2(e) is clamped at
// -160 first, so that -inf gives 0, not NaN); elsewhere ATen's exp_u20
inline Vec exp_nonpositive(const Vec& x) {
#if defined(CPU_CAPABILITY_AVX512)
  const __m512 t = _mm512_max_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _mm512_set1_ps(-160.0f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return Vec(_mm512_scalef_ps(p, n));
#else
  return x.exp_u20();
#endif
}

// Beam search's look at one step's logits (R, V), contiguous: each row's log-sum-exp
// lse_r = m_r + log sum_v exp(x_rv - m_r) (m_r the row's max), written to lse (R,), and for each block of `block`
// consecutive tokens its best log-probability, max over the block of x_rv, minus lse_r, written to block_best
// (R, V / block). The log-probability of token v is x_rv - lse_r. One read of the logits, where log_softmax
// reads them twice and writes them, and a block max reads them once more.
void block_log_softmax(const Tensor& logits, int64_t block, Tensor lse, Tensor block_best) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "logits must be a contiguous (R, V) tensor");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  TORCH_CHECK(block >= 1 && vocab % block == 0, "block (", block, ") must divide the vocabulary (", vocab, ")");
  const int64_t blocks = vocab / block;
  const float* x_p = rows_of(logits, rows, vocab, "logits");
  Tensor lse_rows = lse.view({rows, 1});
  float* lse_p = rows_of_mut(lse_rows, rows, 1, "lse");
  float* best_p = rows_of_mut(block_best, rows, blocks, "block_best");
  const int64_t lse_s = lse_rows.stride(0), best_s = block_best.stride(0);
  const int64_t whole = block - block % Vec::size();  // a block's elements in whole vectors
  const float lowest = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* x = x_p + r * vocab;
      float* best = best_p + r * best_s;
      float top = lowest;
      for (int64_t k = 0; k < blocks; ++k) {
        const float* xk = x + k * block;
        Vec acc(lowest);
        for (int64_t j = 0; j < whole; j += Vec::size()) {
          acc = at::vec::maximum(acc, Vec::loadu(xk + j));
        }
        float m = at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); },
                                                 acc);
        for (int64_t j = whole; j < block; ++j) {
          m = std::max(m, xk[j]);
        }
        best[k] = m;
        top = std::max(top, m);
      }
      const Vec shift(top);
      Vec acc(0.0f);
      const int64_t all = vocab - vocab % Vec::size();
      for (int64_t j = 0; j < all; j += Vec::size()) {
        acc = acc + exp_nonpositive(Vec::loadu(x + j) - shift);
      }
      float total = at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, acc);
      for (int64_t j = all; j < vocab; ++j) {
        total += std::exp(x[j] - top);
      }
      const float row_lse = top + std::log(total);
      lse_p[r * lse_s] = row_lse;
      for (int64_t k = 0; k < blocks; ++k) {
        best[k] -= row_lse;
      }
    }
  });
}

// The attention's context for one step of the training loop: context (B, C) = sum_s weights[b, s] x values[b, s, :],
// values (B, S, C) contiguous. What torch.bmm(weights (B, 1, S), values) computes, at memory speed, which a batched
// product of one-row matrices (and its backward's) does not reach.
void attention_context(const Tensor& weights, const Tensor& values, Tensor context) {
  TORCH_CHECK(values.dim() == 3 && values.is_contiguous(), "values must be a contiguous (B, S, C) tensor");
  const int64_t batch = values.size(0), src = values.size(1), size = values.size(2);
  const float* w_p = rows_of(weights, batch, src, "weights");
  const float* v_p = rows_of(values.view({batch * src, size}), batch * src, size, "values");
  float* c_p = rows_of_mut(context, batch, size, "context");
  const int64_t w_s = weights.stride(0), c_s = context.stride(0);
  constexpr int64_t kV = Vec::size();
  constexpr int64_t kCols = 4;  // four vectors of columns per pass over the source positions
  at::parallel_for(0, batch, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* wb = w_p + b * w_s;
      const float* vb = v_p + b * src * size;
      float* cb = c_p + b * c_s;
      int64_t j = 0;
      for (; j + kCols * kV <= size; j += kCols * kV) {
        Vec acc[kCols] = {Vec(0.0f), Vec(0.0f), Vec(0.0f), Vec(0.0f)};
        for (int64_t s = 0; s < src; ++s) {
          const Vec w(wb[s]);
          for (int64_t c = 0; c < kCols; ++c) {
            acc[c] = at::vec::fmadd(w, Vec::loadu(vb + s * size + j + c * kV), acc[c]);
          }
        }
        for (int64_t c = 0; c < kCols; ++c) {
          acc[c].store(cb + j + c * kV);
        }
      }
      for (; j < size; j += kV) {
        const int64_t c = std::min<int64_t>(kV, size - j);
        Vec acc(0.0f);
        for (int64_t s = 0; s < src; ++s) {
          acc = at::vec::fmadd(Vec(wb[s]), load(vb + s * size + j, c), acc);
        }
        store(acc, cb + j, c);
      }
    }
  });
}

// The gradient of attention_context's weights: d_weights (B, S) = values[b, s, :] . d_context[b, :], plus
// d_extra (B, S) when given (the gradient the weights get from elsewhere).
void attention_context_backward(const Tensor& values, const Tensor& d_context, const std::optional<Tensor>& d_extra,
                                Tensor d_weights) {
  TORCH_CHECK(values.dim() == 3 && values.is_contiguous(), "values must be a contiguous (B, S, C) tensor");
  const int64_t batch = values.size(0), src = values.size(1), size = values.size(2);
  const float* v_p = rows_of(values.view({batch * src, size}), batch * src, size, "values");
  const float* dc_p = rows_of(d_context, batch, size, "d_context");
  const float* dx_p = d_extra.has_value() ? rows_of(*d_extra, batch, src, "d_extra") : nullptr;
  float* dw_p = rows_of_mut(d_weights, batch, src, "d_weights");
  const int64_t dc_s = d_context.stride(0), dw_s = d_weights.stride(0);
  const int64_t dx_s = d_extra.has_value() ? d_extra->stride(0) : 0;
  at::parallel_for(0, batch, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* dcb = dc_p + b * dc_s;
      for (int64_t s = 0; s < src; ++s) {
        const float* vs = v_p + (b * src + s) * size;
        Vec acc(0.0f);
        for (int64_t j = 0; j < size; j += Vec::size()) {
          const int64_t c = std::min<int64_t>(Vec::size(), size - j);
          acc = at::vec::fmadd(load(vs + j, c), load(dcb + j, c), acc);
        }
        const float dot = at::vec::vec_reduce_all<float>([](const Vec& x, const Vec& y) { return x + y; }, acc);
        dw_p[b * dw_s + s] = dx_p == nullptr ? dot : dot + dx_p[b * dx_s + s];
      }
    }
  });
}

// The backward of additive_attention_forward for one step, from d_weights (B, S), the gradient of the weights:
//   d_scores = w * (d_w - sum_s w d_w)                       (B, S), written to d_scores
//   d_e_bs   = (1 - e_bs^2) * d_scores_bs * v                  added to d_keys (B, S, A)
//   d_query  = sum_s d_e_bs                                  (B, A), written to d_query
void additive_attention_backward(const Tensor& d_weights, const Tensor& weights, const Tensor& energies,
                                 const Tensor& v, Tensor d_keys, Tensor d_query, Tensor d_scores) {
  TORCH_CHECK(energies.dim() == 3 && energies.is_contiguous() && d_keys.is_contiguous() &&
                  d_keys.sizes() == energies.sizes(),
              "energies and d_keys must be contiguous (B, S, A) tensors of the same shape");
  const int64_t batch = energies.size(0), src = energies.size(1), size = energies.size(2);
  const float* dw_p = rows_of(d_weights, batch, src, "d_weights");
  const float* w_p = rows_of(weights, batch, src, "weights");
  const float* e_p = rows_of(energies.view({batch * src, size}), batch * src, size, "energies");
  const float* v_p = rows_of(v.view({1, size}), 1, size, "v");
  Tensor d_key_rows = d_keys.view({batch * src, size});
  float* dk_p = rows_of_mut(d_key_rows, batch * src, size, "d_keys");
  float* dq_p = rows_of_mut(d_query, batch, size, "d_query");
  float* ds_p = rows_of_mut(d_scores, batch, src, "d_scores");
  const int64_t dw_s = d_weights.stride(0), w_s = weights.stride(0), dq_s = d_query.stride(0);
  const int64_t ds_s = d_scores.stride(0);
  const Vec one(1.0f);
  at::parallel_for(0, batch, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const float* wb = w_p + b * w_s;
      const float* dwb = dw_p + b * dw_s;
      float* dsb = ds_p + b * ds_s;
      float dot = 0.0f;
      for (int64_t s = 0; s < src; ++s) {
        dot += wb[s] * dwb[s];
      }
      for (int64_t s = 0; s < src; ++s) {
        dsb[s] = wb[s] * (dwb[s] - dot);
      }
      float* dqb = dq_p + b * dq_s;
      for (int64_t j = 0; j < size; j += Vec::size()) {
        const int64_t c = std::min<int64_t>(Vec::size(), size - j);
        const Vec vj = load(v_p + j, c);
        Vec dq(0.0f);
        for (int64_t s = 0; s < src; ++s) {
          const Vec e = load(e_p + (b * src + s) * size + j, c);
          const Vec d_e = (one - e * e) * Vec(dsb[s]) * vj;
          float* dk = dk_p + (b * src + s) * size + j;
          store(load(dk, c) + d_e, dk, c);
          dq = dq + d_e;
        }
        store(dq, dqb + j, c);
      }
    }
  });
}

// One block of the output layer's cross-entropy (s2s_attn/model/loss.py, _block_loss), for logits (C, V)
// contiguous, the bias (V,) not yet added when given. Per row, with z = logits + bias, m = max z, and
// lse = log sum_j exp(z_j - m): row_loss (C,) = (1 - ls) (lse - (z_t - m)) + ls (lse - mean_j (z_j - m)) for the
// target t and label smoothing ls; with want_grad the logits are overwritten with the gradient
// softmax(z) - ((1 - ls) onehot(t) + ls / V), else with exp(z - m). Three passes over a row (in cache), where the
// ATen calls made eight over the whole block.
void cross_entropy_block(Tensor logits, const std::optional<Tensor>& bias, const Tensor& targets,
                         double label_smoothing, bool want_grad, Tensor row_loss) {
  TORCH_CHECK(logits.dim() == 2 && logits.is_contiguous(), "logits must be a contiguous (C, V) tensor");
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  float* x_p = rows_of_mut(logits, rows, vocab, "logits");
  const float* b_p = bias.has_value() ? rows_of(bias->view({1, vocab}), 1, vocab, "bias") : nullptr;
  TORCH_CHECK(targets.scalar_type() == at::kLong && targets.is_contiguous() && targets.numel() == rows,
              "targets must be a contiguous int64 tensor of ", rows, " ids");
  const int64_t* t_p = targets.const_data_ptr<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(t_p[r] >= 0 && t_p[r] < vocab, "target ", t_p[r], " out of range for ", vocab, " classes");
  }
  Tensor loss_rows = row_loss.view({rows, 1});
  float* l_p = rows_of_mut(loss_rows, rows, 1, "row_loss");
  const int64_t l_s = loss_rows.stride(0);
  const float smoothing = static_cast<float>(label_smoothing), keep = 1.0f - smoothing;
  const float spread = smoothing / static_cast<float>(vocab);
  const int64_t whole = vocab - vocab % Vec::size();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* x = x_p + r * vocab;
      Vec top(-std::numeric_limits<float>::infinity()), total(0.0f);
      for (int64_t j = 0; j < whole; j += Vec::size()) {  // z = logits + bias: its max and sum
        Vec z = Vec::loadu(x + j);
        if (b_p != nullptr) {
          z = z + Vec::loadu(b_p + j);
          z.store(x + j);
        }
        top = at::vec::maximum(top, z);
        total = total + z;
      }
      float m = at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return at::vec::maximum(a, b); },
                                               top);
      float sum_z = at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, total);
      for (int64_t j = whole; j < vocab; ++j) {
        if (b_p != nullptr) {
          x[j] += b_p[j];
        }
        m = std::max(m, x[j]);
        sum_z += x[j];
      }
      const float target_shifted = x[t_p[r]] - m;
      const Vec shift(m);
      Vec norm(0.0f);
      for (int64_t j = 0; j < whole; j += Vec::size()) {  // exp(z - m), kept, and its sum
        const Vec e = (Vec::loadu(x + j) - shift).exp();
        e.store(x + j);
        norm = norm + e;
      }
      float sum_e = at::vec::vec_reduce_all<float>([](const Vec& a, const Vec& b) { return a + b; }, norm);
      for (int64_t j = whole; j < vocab; ++j) {
        x[j] = std::exp(x[j] - m);
        sum_e += x[j];
      }
      const float lse = std::log(sum_e);
      float loss = keep * (lse - target_shifted);
      if (smoothing != 0.0f) {
        loss += smoothing * (lse - (sum_z / static_cast<float>(vocab) - m));
      }
      l_p[r * l_s] = loss;
      if (!want_grad) {
        continue;
      }
      const Vec scale(1.0f / sum_e), minus(spread);
      for (int64_t j = 0; j < whole; j += Vec::size()) {  // softmax - the smoothed target distribution
        (Vec::loadu(x + j) * scale - minus).store(x + j);
      }
      for (int64_t j = whole; j < vocab; ++j) {
        x[j] = x[j] / sum_e - spread;
      }
      x[t_p[r]] -= keep;
    }
  });
}

}  // namespace

TORCH_LIBRARY(s2s_attn, m) {
  m.def("gru_forward(Tensor gi, Tensor gh, Tensor h, Tensor(a!)? rz, Tensor(b!)? n, Tensor(c!) h_new, "
        "Tensor(d!)? hidden_n, Tensor? mask) -> ()");
  m.def("gru_step(Tensor gi, Tensor gh, Tensor h, Tensor(a!) h_new) -> ()");
  m.def("gru_backward(Tensor dh, Tensor? d_out, Tensor rz, Tensor n, Tensor h, Tensor hidden_n, Tensor? mask, "
        "Tensor(a!) d_gi, Tensor(b!) d_gh, Tensor(c!) carry) -> ()");
  m.def("additive_attention_forward(Tensor query, Tensor keys, Tensor v, Tensor mask, Tensor(a!) energies, "
        "Tensor(b!) weights) -> ()");
  m.def("additive_attention_backward(Tensor d_weights, Tensor weights, Tensor energies, Tensor v, "
        "Tensor(a!) d_keys, Tensor(b!) d_query, Tensor(c!) d_scores) -> ()");
  m.def("attention_context(Tensor weights, Tensor values, Tensor(a!) context) -> ()");
  m.def("attention_context_backward(Tensor values, Tensor d_context, Tensor? d_extra, Tensor(a!) d_weights) -> ()");
  m.def("beam_additive_attention(Tensor query, Tensor keys, Tensor v, Tensor mask, int width, Tensor(a!) weights) "
        "-> ()");
  m.def("beam_mix(Tensor weights, Tensor values, int width, Tensor table, Tensor prev, Tensor(a!) out) -> ()");
  m.def("block_log_softmax(Tensor logits, int block, Tensor(a!) lse, Tensor(b!) block_best) -> ()");
  m.def("cross_entropy_block(Tensor(a!) logits, Tensor? bias, Tensor targets, float label_smoothing, bool want_grad, "
        "Tensor(b!) row_loss) -> ()");
  m.def("gru_layer_forward(Tensor input_gates, Tensor hh_weight, Tensor hh_bias, Tensor? step_mask, "
        "Tensor(a!) states, Tensor(b!)? rz, Tensor(c!)? n, Tensor(d!)? hidden_n, bool onednn) -> ()");
  m.def("gru_layer_inference(Tensor input_gates, Tensor hh_weight, Tensor hh_bias, Tensor? step_mask, "
        "Tensor(a!) states, bool onednn) -> ()");
  m.def("gru_layer_backward(Tensor previous, Tensor rz, Tensor n, Tensor hidden_n, Tensor hh_weight, "
        "Tensor? step_mask, Tensor? d_outputs, Tensor(a!) dh, Tensor(b!) d_gi, Tensor(c!) d_gh, bool onednn) -> ()");
}

TORCH_LIBRARY_IMPL(s2s_attn, CPU, m) {
  m.impl("gru_forward", gru_forward);
  m.impl("gru_step", gru_step);
  m.impl("gru_backward", gru_backward);
  m.impl("additive_attention_forward", additive_attention_forward);
  m.impl("additive_attention_backward", additive_attention_backward);
  m.impl("attention_context", attention_context);
  m.impl("attention_context_backward", attention_context_backward);
  m.impl("beam_additive_attention", beam_additive_attention);
  m.impl("beam_mix", beam_mix);
  m.impl("block_log_softmax", block_log_softmax);
  m.impl("cross_entropy_block", cross_entropy_block);
  m.impl("gru_layer_forward", gru_layer_forward);
  m.impl("gru_layer_inference", gru_layer_inference);
  m.impl("gru_layer_backward", gru_layer_backward);
}
