// core/dataset_internal.h: what core/dataset.cpp and core/dataset_idx.cpp
// share; not part of the public API.
#pragma once

#include <filesystem>
#include <string>

#include "core/dataset.h"

namespace octet::detail {

// Whether dir holds the IDX files of a split (plain or .gz).
bool has_idx_files(const std::filesystem::path& dir);
// " (the input of model.oct)" when someone asked for the shape, else "".
std::string wanted_by(const LoadOptions& opt);
// s in lower case (ASCII), for file extensions and folder names.
std::string lower(std::string s);

}  // namespace octet::detail
