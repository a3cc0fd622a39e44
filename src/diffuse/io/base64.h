// Base64 (RFC 4648, standard alphabet, '=' padding), for images embedded in HTML as data: URIs.
#pragma once
#include <string>
#include <string_view>

namespace diffuse {

std::string base64_encode(std::string_view bytes);

// The inverse; anything but canonical padded base64 throws diffuse::Error.
std::string base64_decode(std::string_view text);

}  // namespace diffuse
