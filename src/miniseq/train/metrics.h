// Training metrics: one JSON record per logging step in OUT/metrics.jsonl, and OUT/training.svg, a plot of the
// loss, the learning rate and the peak memory over the steps (plain SVG, no plotting library).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace miniseq {

// Rewrites OUT/metrics.jsonl from the log history (records with "loss").
void write_metrics_jsonl(const std::string& path, const nlohmann::json& log_history);
// Three stacked panels against the optimizer step, with ticks: the logged loss, the learning rate, and the measured
// process's peak RSS beside the planned arena (planned_bytes; 0 = not drawn). The RSS holds the CPU run's arena plus
// the program and its libraries (on a GPU run the device arena is not in it).
std::string training_svg(const nlohmann::json& log_history, size_t planned_bytes = 0);

}  // namespace miniseq
