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

// One panel: a polyline of (x, y) in a box at vertical offset y0, with min/max labels.
void panel(std::ostringstream& svg, const std::vector<double>& xs, const std::vector<double>& ys, double y0,
           const char* title, const char* color, const char* fmt) {
  const double W = 640, H = 200, left = 70, right = 20, top = 30, bottom = 30;
  const double pw = W - left - right, ph = H - top - bottom;
  svg << "<text x=\"" << left << "\" y=\"" << y0 + 20 << "\" font-size=\"14\">" << title << "</text>\n";
  svg << "<rect x=\"" << left << "\" y=\"" << y0 + top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"#999\"/>\n";
  if (xs.empty()) return;
  const double x_min = xs.front(), x_max = std::max(xs.back(), xs.front() + 1);
  double y_min = *std::min_element(ys.begin(), ys.end()), y_max = *std::max_element(ys.begin(), ys.end());
  if (y_max - y_min < 1e-12) y_max = y_min + 1.0;
  svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
  for (size_t i = 0; i < xs.size(); ++i) {
    const double px = left + pw * (xs[i] - x_min) / (x_max - x_min);
    const double py = y0 + top + ph * (1.0 - (ys[i] - y_min) / (y_max - y_min));
    svg << px << "," << py << " ";
  }
  svg << "\"/>\n";
  char b[64];
  std::snprintf(b, sizeof b, fmt, y_max);
  svg << "<text x=\"4\" y=\"" << y0 + top + 10 << "\" font-size=\"11\">" << b << "</text>\n";
  std::snprintf(b, sizeof b, fmt, y_min);
  svg << "<text x=\"4\" y=\"" << y0 + top + ph << "\" font-size=\"11\">" << b << "</text>\n";
  svg << "<text x=\"" << left << "\" y=\"" << y0 + H - 8 << "\" font-size=\"11\">step " << x_min << "</text>\n";
  svg << "<text x=\"" << left + pw - 60 << "\" y=\"" << y0 + H - 8 << "\" font-size=\"11\">step " << x_max
      << "</text>\n";
}

}  // namespace

std::string training_svg(const nlohmann::json& log_history) {
  std::vector<double> steps, loss, mem;
  for (const auto& r : log_history) {
    if (!r.contains("loss")) continue;
    steps.push_back(r["step"].get<double>());
    loss.push_back(r["loss"].get<double>());
    mem.push_back(r.value("peak_memory_bytes", 0.0) / (1024.0 * 1024.0 * 1024.0));
  }
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"420\" font-family=\"sans-serif\">\n"
      << "<rect width=\"640\" height=\"420\" fill=\"white\"/>\n";
  panel(svg, steps, loss, 0, "training loss", "#1f77b4", "%.4f");
  panel(svg, steps, mem, 210, "peak memory (GiB)", "#d62728", "%.3f");
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace miniseq
