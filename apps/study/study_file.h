// apps/study/study_file.h: the study file, a parameter study written down as
// plain "key = value" lines (like `octet train --qat-config`).
//
//   # studies/example.study
//   title    = Quantize delay on ResNet-20
//   train    = --preset full --epochs 10 --subset 10000      # the base recipe: octet train flags
//   baseline = --qat --preprocess vgg                        # the baseline's knobs
//   seeds    = 0, 1, 2
//   paper    = ResNet-50 v1 in the paper (TensorFlow, one run per row)
//   reference = baseline                # the row the report's Δ column compares with (default baseline)
//
//   row.float         = --quant-delay 1     # each row names only what it changes
//   row.float.label   = float (not quantized)
//   row.float.paper   = 91.14 / 99.42       # the paper's top-1 / top-5 (either may be "-")
//   row.baseline      =                     # the baseline itself
//   row.delay40       = --quant-delay 0.4
//   row.ptq_mse       = --observer mse      # a PTQ row: calibrate another row's model
//   row.ptq_mse.command = calibrate
//   row.ptq_mse.from    = float
//
//   figure.delay       = baseline, delay40  # loss against step, one curve per row
//   figure.delay.title = Fig. 2: quantize delay
//
// A train row runs `octet train <train> <baseline> <row> --seed S`; a flag the
// row gives replaces the same flag of the baseline, which replaces the base
// recipe's (flags are merged by name; see merge_flags). A calibrate row runs
// `octet calibrate <final checkpoint of row FROM> <row flags>` (the baseline's
// flags do not apply: they are training flags). Rows keep the file's order;
// keys may come in any order. '#' starts a comment; a line may not repeat a key.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace octet::study {

// Command-line words of one flag: "--epochs" "10", or "--qat" alone.
struct Flag {
  std::string name;                  // "--epochs"
  std::optional<std::string> value;  // "10"; nullopt for a switch
  bool operator==(const Flag&) const = default;
};

// Splits shell-like words ("--a 1 --b") into flags by the rule `octet` uses:
// a word is the previous flag's value unless it starts with "--" or is "-o"/"-h"
// ("-0.5" is a value). Throws std::invalid_argument for a word that is neither
// a flag nor a flag's value.
std::vector<Flag> parse_flags(const std::string& words);
// Later lists override earlier ones flag by flag (same name); the order is the
// order of first appearance. "--no-X" is its own flag (no special meaning here).
std::vector<Flag> merge_flags(const std::vector<std::vector<Flag>>& lists);
// The words again, each a separate argv entry.
std::vector<std::string> flag_words(const std::vector<Flag>& flags);
std::string flags_text(const std::vector<Flag>& flags);  // space-separated, for logs and docs

struct Row {
  std::string id;     // the key after "row.": letters, digits, '_' and '-'
  std::string label;  // for tables and legends (default: the id)
  std::vector<Flag> flags;
  std::string command = "train";  // "train" or "calibrate"
  std::string from;               // calibrate: the row whose final checkpoint is calibrated
  std::optional<double> paper_top1, paper_top5;  // the paper's figures, percent
};

struct Figure {
  std::string id;     // the key after "figure."
  std::string title;  // default: the id
  std::vector<std::string> rows;  // row ids, in legend order
};

struct StudyFile {
  std::string path;  // where it was read from ("" for text)
  std::string title;
  std::string paper;  // what the paper column means (the table's caption says it)
  std::vector<Flag> train;     // the base recipe
  std::vector<Flag> baseline;  // the baseline's knobs
  std::string reference = "baseline";  // the row of the report's Δ column
  std::vector<uint64_t> seeds;
  std::vector<Row> rows;
  std::vector<Figure> figures;

  const Row* row(const std::string& id) const;  // nullptr if absent

  // Throws std::invalid_argument naming the file, the line and the key for a
  // malformed line, an unknown key, a repeated key, a bad number, a figure or
  // a calibrate row or a reference naming a row that does not exist (the
  // default reference "baseline" may be absent: no Δ column then), no seeds
  // or no rows.
  static StudyFile parse(const std::string& text, const std::string& path = "");
  static StudyFile load(const std::string& path);
};

}  // namespace octet::study
