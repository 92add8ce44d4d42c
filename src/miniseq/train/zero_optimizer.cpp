#include "miniseq/train/zero_optimizer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "miniseq/core/stochastic_rounding.h"
#include "miniseq/io/safetensors.h"
#include "miniseq/model/planner.h"

namespace miniseq {

namespace fs = std::filesystem;

ZeroLayout::ZeroLayout(const std::vector<ParamSpec>& specs, int r) : ranks(r) {
  for (const auto& s : specs) {
    offsets.push_back(total);
    total += s.shape.numel();
  }
  shard = (total + ranks - 1) / ranks;
}

std::vector<ZeroLayout::Piece> ZeroLayout::pieces(int64_t flat_begin, int64_t flat_end) const {
  std::vector<Piece> out;
  for (size_t i = 0; i < offsets.size(); ++i) {
    const int64_t p_begin = offsets[i];
    const int64_t p_end = i + 1 < offsets.size() ? offsets[i + 1] : total;
    const int64_t b = std::max(p_begin, flat_begin), e = std::min(p_end, flat_end);
    if (b < e) out.push_back({i, b - p_begin, e - b, b});
  }
  return out;
}

// Allocation order (exp_avg, exp_avg_sq, master, staging; then the gradient shard) = the planner's
// (model/planner.cpp plan_run, zero_ranks).
ZeroAdamW::ZeroAdamW(MemoryPlan& plan, const std::vector<ParamSpec>& specs, DType moments, DType params,
                     int rank, int ranks, const ZeroOptions& o)
    : specs_(specs),
      layout_(specs, ranks),
      rank_(rank),
      seed_(o.seed),
      cpu_(o.host ? make_cpu_backend() : nullptr),
      m_((o.host ? *o.host : plan).alloc("exp_avg:shard", {layout_.shard}, moments, MemCategory::Optimizer)),
      v_((o.host ? *o.host : plan)
             .alloc("exp_avg_sq:shard", {layout_.shard}, moments, MemCategory::Optimizer)) {
  MS_CHECK(!o.host || o.host->device() == Device::CPU, "internal: offloaded ZeRO shards need a host plan");
  if (o.host) {
    master_.emplace(o.host->alloc("master:shard", {layout_.shard}, DType::F32, MemCategory::Optimizer));
    staging_.emplace(o.host->alloc("grad_staging", {zero_staging_floats(specs, ranks)}, DType::F32,
                                   MemCategory::Workspace));
  } else if (params != DType::F32 && o.master_weights) {
    master_.emplace(plan.alloc("master:shard", {layout_.shard}, DType::F32, MemCategory::Optimizer));
  }
  shard_grads_ = o.shard_grads;
  if (o.shard_grads && o.in_backward)
    g_piece_.emplace(
        plan.alloc("grad_piece", {zero_staging_floats(specs, ranks)}, DType::F32, MemCategory::Grads));
  else if (o.shard_grads)
    g_.emplace(plan.alloc("grads:shard", {layout_.shard}, DType::F32, MemCategory::Grads));
  piece_sq_.assign(specs.size(), 0.0);
  owners_.resize(specs_.size());
  for (size_t i = 0; i < specs_.size(); ++i) index_[specs_[i].name] = i;
  for (int q = 0; q < ranks; ++q)
    for (const auto& p : layout_.pieces(layout_.begin(q), layout_.end(q))) owners_[p.param].push_back({q, p});
}

Tensor ZeroAdamW::piece(const Tensor& flat_shard, const ZeroLayout::Piece& p) const {
  const int64_t at = p.flat - layout_.begin(rank_);
  return Tensor(static_cast<char*>(flat_shard.data) + at * static_cast<int64_t>(dtype_size(flat_shard.dtype)),
                {p.count}, flat_shard.dtype, flat_shard.device);
}

Tensor ZeroAdamW::piece_of_param(const Tensor& param, const ZeroLayout::Piece& p) {
  return Tensor(static_cast<char*>(param.data) + p.offset * static_cast<int64_t>(dtype_size(param.dtype)),
                {p.count}, param.dtype, param.device);
}

void ZeroAdamW::reset(Backend& be, const ParamSet& weights) {
  Backend& state = cpu_ ? *cpu_ : be;
  state.fill_zero(m_);
  state.fill_zero(v_);
  if (master_)
    for (const auto& p : layout_.pieces(layout_.begin(rank_), layout_.end(rank_))) {
      const Tensor w = piece_of_param(weights.get(specs_[p.param].name), p);
      if (cpu_)
        be.download(piece(*master_, p), w);
      else
        be.copy(piece(*master_, p), w);
    }
  // Without a master: the weights rounded to the backend's weight precision, as AdamW::reset (every rank
  // rounds the same weights alike).
  if (!master_ && be.weight_precision() != DType::F32)
    weights.for_each(
        [&](const ParamSpec&, const Tensor& w) { be.round_to_precision(w, be.weight_precision()); });
}

void ZeroAdamW::state_to_host(Backend& be, const Tensor& host_dst, const Tensor& state) const {
  if (state.device == Device::CPU)
    convert(state.data, state.dtype, host_dst.data, host_dst.dtype, static_cast<size_t>(state.numel()));
  else
    be.download(host_dst, state);
}

void ZeroAdamW::state_from_host(Backend& be, const Tensor& state, const Tensor& host_src) const {
  if (state.device == Device::CPU)
    convert(host_src.data, host_src.dtype, state.data, state.dtype, static_cast<size_t>(state.numel()));
  else
    be.upload(state, host_src);
}

void ZeroAdamW::update_piece(Backend& be, const ParamSet& weights, const ZeroLayout::Piece& p,
                             const Tensor& grad, const AdamWHyper& h) {
  // The arithmetic of AdamW::update, on this rank's part of a parameter; without a master the rounding bits
  // of these elements in the whole parameter's stream.
  const ParamSpec& spec = specs_[p.param];
  AdamWParams a;
  a.lr = h.lr, a.beta1 = h.beta1, a.beta2 = h.beta2, a.eps = h.eps, a.step = h.step;
  a.weight_decay = AdamW::decays(spec) ? h.weight_decay : 0.0;
  a.grad_scale = static_cast<float>(h.clip);
  a.rounding_stream = sr::advance(sr::stream(seed_, static_cast<uint64_t>(h.step), sr::name_key(spec.name)),
                                  static_cast<uint64_t>(p.offset));
  const Tensor w = piece_of_param(weights.get(spec.name), p);
  if (!cpu_) {
    const Tensor master = master_ ? piece(*master_, p) : Tensor();
    be.adamw_step(w, grad, piece(m_, p), piece(v_, p), a, master_ ? &master : nullptr);
    return;
  }
  // Offloaded, as the host optimizer: the gradient down into the staging buffer, AdamW on the fp32 master,
  // the new weights in the device's dtype written over the gradient and uploaded.
  const Tensor staged_grad((*staging_)->data, {p.count}, DType::F32, Device::CPU);
  be.download(staged_grad, grad);
  const Tensor master = piece(*master_, p);
  cpu_->adamw_step(master, staged_grad, piece(m_, p), piece(v_, p), a, nullptr);
  const Tensor staged_w((*staging_)->data, {p.count}, w.dtype, Device::CPU);
  convert(master.data, DType::F32, staged_w.data, w.dtype, static_cast<size_t>(p.count));
  be.upload(w, staged_w);
}

void ZeroAdamW::update(Backend& be, const ParamSet& weights, const AdamWHyper& h,
                       const std::function<Tensor(const ZeroLayout::Piece&)>& grad) {
  for (const auto& p : layout_.pieces(layout_.begin(rank_), layout_.end(rank_)))
    update_piece(be, weights, p, grad(p), h);
}

void ZeroAdamW::update_param(Backend& be, const ParamSet& weights, const std::string& name,
                             const Tensor& grad, const AdamWHyper& h, dist::Communicator& comm) {
  const auto it = index_.find(name);
  MS_CHECK(it != index_.end(), "internal: no parameter '", name, "' in the ZeRO layout");

  for (const auto& [owner, p] : owners_[it->second])
    if (owner == rank_) update_piece(be, weights, p, piece_of_param(grad, p), h);
  broadcast_param(weights, it->second, comm);
}

void ZeroAdamW::broadcast_param(const ParamSet& weights, size_t param, dist::Communicator& comm) const {
  if (comm.size() == 1) return;
  for (const auto& [owner, p] : owners_[param])
    comm.broadcast(piece_of_param(weights.get(specs_[param].name), p), owner);
}

void ZeroAdamW::step(Backend& be, const ParamSet& weights, const ParamSet& grads, const AdamWHyper& h,
                     dist::Communicator& comm) {
  update(be, weights, h,
         [&](const ZeroLayout::Piece& p) { return piece_of_param(grads.get(specs_[p.param].name), p); });
  broadcast_weights(weights, comm);
}

void ZeroAdamW::step_from_shard(Backend& be, const ParamSet& weights, const AdamWHyper& h,
                                dist::Communicator& comm) {
  update(be, weights, h, [&](const ZeroLayout::Piece& p) { return piece(*g_, p); });
  broadcast_weights(weights, comm);
}

double ZeroAdamW::grad_norm(Backend& be, dist::Communicator& comm) const {
  // Per piece in table order (one rank: AdamW::grad_norm's order and bits).
  double sq = 0.0;
  for (const auto& p : layout_.pieces(layout_.begin(rank_), layout_.end(rank_)))
    sq += be.sum_squares(piece(*g_, p));
  comm.all_reduce_sum_f64(&sq, 1);
  return std::sqrt(sq);
}

void ZeroAdamW::reduce_grad(const std::string& name, const Tensor& grad, dist::Communicator& comm,
                            Backend& be) const {
  const auto it = index_.find(name);
  MS_CHECK(it != index_.end(), "internal: no parameter '", name, "' in the ZeRO layout");
  for (const auto& [owner, p] : owners_[it->second]) {
    if (comm.size() == 1) {
      be.add_inplace(piece(*g_, p), piece_of_param(grad, p));
      continue;
    }
    comm.reduce_sum_into(piece_of_param(grad, p), owner == rank_ ? piece(*g_, p) : Tensor(), owner);
  }
}

void ZeroAdamW::reduce_piecewise(const std::string& name, const Tensor& grad, const ParamSet* weights,
                                 const AdamWHyper& h, dist::Communicator& comm, Backend& be) {
  const auto it = index_.find(name);
  MS_CHECK(it != index_.end(), "internal: no parameter '", name, "' in the ZeRO layout");
  MS_CHECK(g_piece_.has_value(), "internal: reduce_piecewise needs the piece buffer (stage 2 in backward)");
  for (const auto& [owner, p] : owners_[it->second]) {
    const Tensor sum =
        owner == rank_ ? Tensor((*g_piece_)->data, {p.count}, DType::F32, (*g_piece_)->device) : Tensor();
    if (owner == rank_) be.fill_zero(sum);
    if (comm.size() == 1)
      be.add_inplace(sum, piece_of_param(grad, p));
    else
      comm.reduce_sum_into(piece_of_param(grad, p), sum, owner);
    if (owner != rank_) continue;
    if (weights)
      update_piece(be, *weights, p, sum, h);
    else
      piece_sq_[p.param] = be.sum_squares(sum);
  }
  if (weights) broadcast_param(*weights, it->second, comm);
}

double ZeroAdamW::piece_grad_norm(dist::Communicator& comm) const {
  double sq = 0.0;
  for (const auto& p : layout_.pieces(layout_.begin(rank_), layout_.end(rank_))) sq += piece_sq_[p.param];
  comm.all_reduce_sum_f64(&sq, 1);
  return std::sqrt(sq);
}

uint64_t ZeroPieceSink::consume(const std::vector<const ParamSpec*>& specs,
                                const std::vector<Tensor>& grads) {
  for (size_t i = 0; i < specs.size(); ++i)
    opt_.reduce_piecewise(specs[i]->name, grads[i], weights_, h_, comm_, be_);
  return 0;
}

uint64_t ZeroGradSink::consume(const std::vector<const ParamSpec*>& specs, const std::vector<Tensor>& grads) {
  for (size_t i = 0; i < specs.size(); ++i) opt_.reduce_grad(specs[i]->name, grads[i], comm_, be_);
  return 0;
}

void ZeroAdamW::broadcast_weights(const ParamSet& weights, dist::Communicator& comm) const {
  if (comm.size() == 1) return;
  for (int owner = 0; owner < layout_.ranks; ++owner)
    for (const auto& p : layout_.pieces(layout_.begin(owner), layout_.end(owner)))
      comm.broadcast(piece_of_param(weights.get(specs_[p.param].name), p), owner);
}

std::string ZeroAdamW::shard_file(int rank, int ranks) {
  return "optimizer-shard-" + std::to_string(rank) + "-of-" + std::to_string(ranks) + ".safetensors";
}

void ZeroAdamW::save_shard(const std::string& dir, const ParamSet& weights, Backend& be) const {
  const int64_t begin = layout_.begin(rank_), n = layout_.end(rank_) - begin;
  // Host copies: the moments in their dtype, the exact weights of these elements in fp32 (the master, or the
  // fp32 weights themselves).
  std::vector<uint8_t> hm(static_cast<size_t>(n) * dtype_size(m_->dtype)), hv(hm.size());
  std::vector<float> hw(static_cast<size_t>(n));
  const Tensor m_host(hm.data(), {n}, m_->dtype), v_host(hv.data(), {n}, v_->dtype), w_host(hw.data(), {n});
  if (n > 0) {
    const Tensor m_mine(m_->data, {n}, m_->dtype, m_->device), v_mine(v_->data, {n}, v_->dtype, v_->device);
    state_to_host(be, m_host, m_mine);
    state_to_host(be, v_host, v_mine);
  }
  for (const auto& p : layout_.pieces(begin, begin + n)) {
    const Tensor dst(hw.data() + (p.flat - begin), {p.count});
    if (master_)
      state_to_host(be, dst, piece(*master_, p));
    else
      be.download(dst, piece_of_param(weights.get(specs_[p.param].name), p));
  }
  const std::map<std::string, std::string> meta = {{"format", "miniseq-zero1"},
                                                   {"rank", std::to_string(rank_)},
                                                   {"ranks", std::to_string(layout_.ranks)},
                                                   {"begin", std::to_string(begin)},
                                                   {"end", std::to_string(begin + n)},
                                                   {"total", std::to_string(layout_.total)}};
  write_safetensors((fs::path(dir) / shard_file(rank_, layout_.ranks)).string(),
                    {{"exp_avg", m_host, m_host.dtype},
                     {"exp_avg_sq", v_host, v_host.dtype},
                     {"weights", w_host, DType::F32}},
                    meta);
}

void ZeroAdamW::load_shards(const std::string& dir, const ParamSet& weights, Backend& be,
                            dist::Communicator& comm) {
  const int64_t begin = layout_.begin(rank_), end = layout_.end(rank_), n = end - begin;
  std::vector<float> hm(static_cast<size_t>(n)), hv(hm.size()), hw(hm.size());
  int64_t covered = 0;
  int files = 0;
  const std::regex name(R"(optimizer-shard-(\d+)-of-(\d+)\.safetensors)");
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string file = e.path().filename().string();
    if (!std::regex_match(file, name)) continue;
    ++files;
    const SafetensorsFile f(e.path().string());
    const auto& meta = f.metadata();
    auto number = [&](const char* key) -> int64_t {
      const auto it = meta.find(key);
      MS_CHECK(it != meta.end() && !it->second.empty() &&
                   it->second.find_first_not_of("0123456789") == std::string::npos,
               e.path().string(), ": the metadata has no valid '", key, "' (not a shard written by miniseq)");
      return std::stoll(it->second);
    };
    const int64_t b = number("begin"), en = number("end"), total = number("total");
    MS_CHECK(total == layout_.total && b <= en && en <= total, e.path().string(), ": a shard of ", total,
             " parameters [", b, ", ", en, "), but this model has ", layout_.total,
             "; the checkpoint was written for another model");
    const int64_t lo = std::max(b, begin), hi = std::min(en, end);
    if (lo >= hi) continue;
    std::vector<float> t(static_cast<size_t>(en - b));
    const Tensor tt(t.data(), {en - b});
    auto take = [&](const char* tensor, std::vector<float>& into) {
      f.read(tensor, tt);  // checks the name and the shape [end - begin]; converts to fp32
      std::copy(t.begin() + (lo - b), t.begin() + (hi - b), into.begin() + (lo - begin));
    };
    take("exp_avg", hm);
    take("exp_avg_sq", hv);
    take("weights", hw);
    covered += hi - lo;
  }
  MS_CHECK(files > 0, dir,
           ": no optimizer-shard-*.safetensors: the checkpoint was written without --zero_stage; "
           "resume it without --zero_stage");
  MS_CHECK(covered == n, dir, ": the optimizer shards cover ", covered, " of the ", n,
           " parameters this rank needs: a shard file is missing");
  if (n > 0) {
    state_from_host(be, Tensor(m_->data, {n}, m_->dtype, m_->device), Tensor(hm.data(), {n}));
    state_from_host(be, Tensor(v_->data, {n}, v_->dtype, v_->device), Tensor(hv.data(), {n}));
  }
  for (const auto& p : layout_.pieces(begin, end)) {
    const Tensor src(hw.data() + (p.flat - begin), {p.count});
    be.upload(piece_of_param(weights.get(specs_[p.param].name), p), src);
    if (master_) state_from_host(be, piece(*master_, p), src);
  }
  broadcast_weights(weights, comm);
}

TrainProgress load_zero_checkpoint(const std::string& dir, ZeroAdamW& opt, const ParamSet& weights,
                                   Backend& be, dist::Communicator& comm) {
  const fs::path state = fs::path(dir) / "trainer_state.json";
  MS_CHECK(fs::is_directory(dir), dir, ": checkpoint directory does not exist");
  MS_CHECK(fs::exists(state), dir, ": not a miniseq checkpoint (no trainer_state.json)");
  std::ifstream in(state, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  TrainProgress p = parse_trainer_state(text.str(), state.string());
  opt.load_shards(dir, weights, be, comm);
  return p;
}

void refuse_sharded_checkpoint(const std::string& dir) {
  if (fs::exists(fs::path(dir) / "optimizer.safetensors") || !fs::is_directory(dir)) return;
  for (const auto& e : fs::directory_iterator(dir))
    MS_CHECK(e.path().filename().string().rfind("optimizer-shard-", 0) != 0, dir,
             ": the optimizer state is sharded (written with --zero_stage 1 or 2); resume it with "
             "--zero_stage 1 or 2, "
             "at any "
             "number of processes");
}

}  // namespace miniseq
