#include "miniseq/train/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <vector>

#include "miniseq/io/safetensors.h"

namespace miniseq {

void write_metrics_jsonl(const std::string& path, const nlohmann::json& log_history) {
  std::string out;
  for (const auto& r : log_history) out += r.dump() + "\n";
  write_file_atomic(path, out);
}

namespace {

struct Series {
  std::vector<double> y;
  const char* color;
  std::string label;
  bool dashed = false;
};

std::string fmt(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return b;
}

// One panel at vertical offset y0: the series against the steps, five labelled ticks on each axis with grid
// lines, and a legend when there is more than one series. A flat series gets a range around its value, so the
// axis labels never repeat.
void panel(std::ostringstream& svg, const std::vector<double>& xs, const std::vector<Series>& series,
           double y0, const std::string& title) {
  const double W = 640, H = 190, left = 70, right = 20, top = 28, bottom = 34;
  const double pw = W - left - right, ph = H - top - bottom;
  svg << "<text x=\"" << left << "\" y=\"" << y0 + 18 << "\" font-size=\"14\">" << title << "</text>\n";
  svg << "<rect x=\"" << left << "\" y=\"" << y0 + top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"#999\"/>\n";
  if (xs.empty()) return;
  const double x_min = xs.front(), x_max = std::max(xs.back(), xs.front() + 1);
  double y_min = INFINITY, y_max = -INFINITY;
  for (const auto& s : series)
    for (double v : s.y)
      if (std::isfinite(v)) y_min = std::min(y_min, v), y_max = std::max(y_max, v);
  if (!std::isfinite(y_min)) y_min = 0, y_max = 1;
  if (y_max - y_min < 1e-9 * std::max(1.0, std::abs(y_max))) {  // flat: ±5% of the value (or ±0.5)
    const double pad = y_max != 0 ? 0.05 * std::abs(y_max) : 0.5;
    y_min -= pad, y_max += pad;
  }
  auto px = [&](double x) { return left + pw * (x - x_min) / (x_max - x_min); };
  auto py = [&](double y) { return y0 + top + ph * (1.0 - (y - y_min) / (y_max - y_min)); };
  for (int k = 0; k <= 4; ++k) {
    const double yv = y_min + (y_max - y_min) * k / 4.0, yy = py(yv);
    svg << "<line x1=\"" << left << "\" y1=\"" << yy << "\" x2=\"" << left + pw << "\" y2=\"" << yy
        << "\" stroke=\"#eee\"/>\n<text x=\"" << left - 6 << "\" y=\"" << yy + 4
        << "\" font-size=\"10\" text-anchor=\"end\">" << fmt(yv) << "</text>\n";
    const double xv = std::round(x_min + (x_max - x_min) * k / 4.0), xx = px(xv);
    svg << "<line x1=\"" << xx << "\" y1=\"" << y0 + top + ph << "\" x2=\"" << xx << "\" y2=\""
        << y0 + top + ph + 4 << "\" stroke=\"#999\"/>\n<text x=\"" << xx << "\" y=\"" << y0 + top + ph + 15
        << "\" font-size=\"10\" text-anchor=\"middle\">" << fmt(xv) << "</text>\n";
  }
  svg << "<text x=\"" << left + pw / 2 << "\" y=\"" << y0 + H - 2
      << "\" font-size=\"10\" text-anchor=\"middle\">"
      << "optimizer step</text>\n";
  double legend_x = left + pw;
  for (size_t i = series.size(); i-- > 0;) {
    const Series& s = series[i];
    svg << "<polyline fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.5\""
        << (s.dashed ? " stroke-dasharray=\"6 4\"" : "") << " points=\"";
    for (size_t j = 0; j < xs.size() && j < s.y.size(); ++j)
      if (std::isfinite(s.y[j])) svg << px(xs[j]) << "," << py(s.y[j]) << " ";
    svg << "\"/>\n";
    if (series.size() > 1) {
      legend_x -= 8.0 + 6.5 * static_cast<double>(s.label.size());
      svg << "<text x=\"" << legend_x << "\" y=\"" << y0 + 18 << "\" font-size=\"11\" fill=\"" << s.color
          << "\">" << (s.dashed ? "- - " : "— ") << s.label << "</text>\n";
      legend_x -= 30;
    }
  }
}

}  // namespace

std::string training_svg(const nlohmann::json& log_history, size_t planned_bytes) {
  std::vector<double> steps, loss, lr, mem;
  for (const auto& r : log_history) {
    if (!r.contains("loss") || !r["loss"].is_number()) continue;
    steps.push_back(r["step"].get<double>());
    loss.push_back(r["loss"].get<double>());
    lr.push_back(r.value("learning_rate", 0.0));
    mem.push_back(r.value("peak_memory_bytes", 0.0));
  }
  // Memory in MiB or GiB, whichever reads better.
  double top = static_cast<double>(planned_bytes);
  for (double m : mem) top = std::max(top, m);
  const bool gib = top >= 2.0 * (1 << 30);
  const double unit = gib ? (1 << 30) : (1 << 20);
  for (double& m : mem) m /= unit;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"600\" "
         "font-family=\"sans-serif\">\n"
      << "<rect width=\"640\" height=\"600\" fill=\"white\"/>\n";
  panel(svg, steps, {{loss, "#1f77b4", "loss"}}, 0, "training loss (logged means)");
  panel(svg, steps, {{lr, "#2ca02c", "learning rate"}}, 195, "learning rate");
  std::vector<Series> memory = {{mem, "#d62728", "process peak RSS"}};
  if (planned_bytes > 0)
    memory.push_back({std::vector<double>(steps.size(), static_cast<double>(planned_bytes) / unit), "#555",
                      "planned arena", /*dashed=*/true});
  panel(svg, steps, memory, 390, std::string("memory (") + (gib ? "GiB" : "MiB") + ")");
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace miniseq
