#include "apps/study/study_file.h"

#include "core/keyvalue.h"

#include <cctype>
#include <charconv>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>

namespace octet::study {

namespace {

using kv::trim;

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, sep)) {
    item = trim(item);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// `octet`'s own rule (apps/args.h): flags start with "--", plus "-o" and "-h".
bool is_flag_word(const std::string& w) { return w.rfind("--", 0) == 0 || w == "-o" || w == "-h"; }

bool valid_id(const std::string& id) {
  if (id.empty()) return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

}  // namespace

std::vector<Flag> parse_flags(const std::string& words) {
  std::vector<Flag> out;
  std::istringstream in(words);
  std::string w;
  while (in >> w) {
    if (is_flag_word(w)) {
      const auto eq = w.find('=');
      if (w.rfind("--", 0) == 0 && eq != std::string::npos)
        out.push_back({w.substr(0, eq), w.substr(eq + 1)});
      else
        out.push_back({w, std::nullopt});
    } else if (!out.empty() && !out.back().value) {
      out.back().value = w;
    } else {
      throw std::invalid_argument("'" + w + "' is neither a flag (--name) nor the value of one");
    }
  }
  return out;
}

std::vector<Flag> merge_flags(const std::vector<std::vector<Flag>>& lists) {
  std::vector<Flag> out;
  for (const auto& list : lists)
    for (const Flag& f : list) {
      bool replaced = false;
      for (Flag& o : out)
        if (o.name == f.name) {
          o = f;
          replaced = true;
        }
      if (!replaced) out.push_back(f);
    }
  return out;
}

std::vector<std::string> flag_words(const std::vector<Flag>& flags) {
  std::vector<std::string> w;
  for (const Flag& f : flags) {
    w.push_back(f.name);
    if (f.value) w.push_back(*f.value);
  }
  return w;
}

std::string flags_text(const std::vector<Flag>& flags) {
  std::string s;
  for (const std::string& w : flag_words(flags)) s += (s.empty() ? "" : " ") + w;
  return s;
}

const Row* StudyFile::row(const std::string& id) const {
  for (const Row& r : rows)
    if (r.id == id) return &r;
  return nullptr;
}

StudyFile StudyFile::parse(const std::string& text, const std::string& path) {
  StudyFile s;
  s.path = path;
  const std::string file = path.empty() ? std::string("study") : "study file " + path;
  std::set<std::string> seen;  // the keys given
  std::vector<std::string> row_order, figure_order;
  std::map<std::string, Row> rows;
  std::map<std::string, Figure> figures;
  for (const kv::Line& l : kv::parse_lines(text, file)) {
    const std::string where = file + ":" + std::to_string(l.number);
    const std::string& key = l.key;
    const std::string& value = l.value;
    seen.insert(key);
    auto flags = [&](const std::string& v) {
      try {
        return parse_flags(v);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(where + ": " + key + ": " + e.what());
      }
    };
    auto percent = [&](const std::string& v) -> std::optional<double> {
      if (v == "-" || v.empty()) return std::nullopt;
      double d = 0;
      const auto r = std::from_chars(v.data(), v.data() + v.size(), d);
      if (r.ec != std::errc() || r.ptr != v.data() + v.size() || !(d >= 0 && d <= 100))
        throw std::invalid_argument(where + ": " + key + ": '" + v + "' is not a percentage in [0, 100] or '-'");
      return d;
    };
    if (key == "title") {
      s.title = value;
    } else if (key == "paper") {
      s.paper = value;
    } else if (key == "train") {
      s.train = flags(value);
    } else if (key == "baseline") {
      s.baseline = flags(value);
    } else if (key == "reference") {
      s.reference = value;
    } else if (key == "seeds") {
      for (const std::string& w : split(value, ',')) {
        uint64_t seed = 0;
        const auto r = std::from_chars(w.data(), w.data() + w.size(), seed);
        if (r.ec != std::errc() || r.ptr != w.data() + w.size())
          throw std::invalid_argument(where + ": seeds: '" + w + "' is not a seed (a number >= 0)");
        for (uint64_t x : s.seeds)
          if (x == seed) throw std::invalid_argument(where + ": seeds: " + w + " is listed twice");
        s.seeds.push_back(seed);
      }
    } else if (key.rfind("row.", 0) == 0 || key.rfind("figure.", 0) == 0) {
      const bool is_row = key[0] == 'r';
      const std::string rest = key.substr(is_row ? 4 : 7);
      const auto dot = rest.find('.');
      const std::string id = rest.substr(0, dot), field = dot == std::string::npos ? "" : rest.substr(dot + 1);
      if (!valid_id(id))
        throw std::invalid_argument(where + ": '" + id + "' is not a valid id (letters, digits, '_', '-')");
      if (is_row) {
        if (!rows.count(id)) {
          row_order.push_back(id);
          rows[id].id = id;
        }
        Row& r = rows[id];
        if (field.empty()) {
          r.flags = flags(value);
        } else if (field == "label") {
          r.label = value;
        } else if (field == "command") {
          if (value != "train" && value != "calibrate")
            throw std::invalid_argument(where + ": " + key + " must be train or calibrate, got '" + value + "'");
          r.command = value;
        } else if (field == "from") {
          r.from = value;
        } else if (field == "paper") {
          const auto slash = value.find('/');
          r.paper_top1 = percent(trim(value.substr(0, slash)));
          if (slash != std::string::npos) r.paper_top5 = percent(trim(value.substr(slash + 1)));
        } else {
          throw std::invalid_argument(where + ": unknown row key '" + key + "' (row.ID, .label, .command, .from, .paper)");
        }
      } else {
        if (!figures.count(id)) {
          figure_order.push_back(id);
          figures[id].id = id;
        }
        Figure& f = figures[id];
        if (field.empty())
          f.rows = split(value, ',');
        else if (field == "title")
          f.title = value;
        else
          throw std::invalid_argument(where + ": unknown figure key '" + key + "' (figure.ID, figure.ID.title)");
      }
    } else {
      throw std::invalid_argument(where + ": unknown key '" + key +
                                  "' (title, paper, train, baseline, seeds, row.*, figure.*)");
    }
  }
  for (const std::string& id : row_order) {
    Row r = rows[id];
    if (!seen.count("row." + id))
      throw std::invalid_argument(file + ": row '" + id + "' has keys but no 'row." + id + " = FLAGS' line");
    if (r.label.empty()) r.label = id;
    s.rows.push_back(r);
  }
  for (const Row& r : s.rows) {
    if (r.command == "calibrate" && (r.from.empty() || !rows.count(r.from)))
      throw std::invalid_argument(file + ": row '" + r.id + "' calibrates row '" + r.from +
                                  "', which is not a row of the study (give row." + r.id + ".from)");
    if (r.command == "calibrate" && rows[r.from].command != "train")
      throw std::invalid_argument(file + ": row '" + r.id + "' calibrates row '" + r.from + "', itself a calibrate row");
    if (r.command == "train" && !r.from.empty())
      throw std::invalid_argument(file + ": row '" + r.id + "' has a 'from', which only calibrate rows take");
  }
  for (const std::string& id : figure_order) {
    Figure f = figures[id];
    if (f.title.empty()) f.title = id;
    if (f.rows.empty()) throw std::invalid_argument(file + ": figure '" + id + "' names no rows");
    for (const std::string& r : f.rows)
      if (!rows.count(r)) throw std::invalid_argument(file + ": figure '" + id + "' names row '" + r + "', not a row");
    s.figures.push_back(f);
  }
  if (s.seeds.empty()) throw std::invalid_argument(file + ": no seeds (seeds = 0, 1, 2)");
  if (s.rows.empty()) throw std::invalid_argument(file + ": no rows (row.ID = FLAGS)");
  if (seen.count("reference") && !rows.count(s.reference))
    throw std::invalid_argument(file + ": reference '" + s.reference + "' is not a row of the study");
  return s;
}

StudyFile StudyFile::load(const std::string& path) { return parse(kv::read_file(path, "study file"), path); }

}  // namespace octet::study
