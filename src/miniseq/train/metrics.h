// Training metrics: one JSON record per logging step in OUT/metrics.jsonl, and OUT/training.svg, a plot of the
// loss and of the peak memory over the steps (plain SVG, no plotting library).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace miniseq {

// Rewrites OUT/metrics.jsonl from the log history (records with "loss").
void write_metrics_jsonl(const std::string& path, const nlohmann::json& log_history);
// Two stacked panels: loss vs step and peak memory (GiB) vs step.
std::string training_svg(const nlohmann::json& log_history);

}  // namespace miniseq
