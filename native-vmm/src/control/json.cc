#include "control/json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "util/error.h"

namespace smolvm {

class JsonParser {
 public:
  explicit JsonParser(std::string_view text) : text_(text) {}

  Json ParseDocument() {
    Json value = ParseValue(0);
    SkipSpace();
    if (position_ != text_.size()) Fail("trailing characters after the value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 32;

  [[noreturn]] void Fail(const std::string& why) const {
    throw VmmError("malformed JSON at byte " + std::to_string(position_) + ": " + why);
  }
  void SkipSpace() {
    while (position_ < text_.size() &&
           (text_[position_] == ' ' || text_[position_] == '\t' || text_[position_] == '\n' ||
            text_[position_] == '\r'))
      ++position_;
  }
  bool Consume(std::string_view word) {
    if (text_.substr(position_, word.size()) != word) return false;
    position_ += word.size();
    return true;
  }
  char Peek() const { return position_ < text_.size() ? text_[position_] : '\0'; }

  Json ParseValue(int depth) {
    if (depth > kMaxDepth) Fail("nested deeper than 32 levels");
    SkipSpace();
    if (position_ >= text_.size()) Fail("unexpected end of input");
    const char c = text_[position_];
    if (c == '{') return ParseObject(depth);
    if (c == '[') return ParseArray(depth);
    if (c == '"') return Json(ParseString());
    if (Consume("true")) return Json(true);
    if (Consume("false")) return Json(false);
    if (Consume("null")) return Json();
    if (c == '-' || (c >= '0' && c <= '9')) return ParseNumber();
    Fail(std::string("unexpected character '") + c + "'");
  }

  Json ParseObject(int depth) {
    ++position_;  // {
    Json object = Json::Object();
    SkipSpace();
    if (Peek() == '}') {
      ++position_;
      return object;
    }
    for (;;) {
      SkipSpace();
      if (Peek() != '"') Fail("expected a string key");
      std::string key = ParseString();
      for (const auto& member : object.object_)
        if (member.first == key) Fail("duplicate key \"" + key + "\"");
      SkipSpace();
      if (Peek() != ':') Fail("expected ':'");
      ++position_;
      Json value = ParseValue(depth + 1);
      object.object_.emplace_back(std::move(key), std::move(value));
      SkipSpace();
      if (Peek() == ',') {
        ++position_;
        continue;
      }
      if (Peek() == '}') {
        ++position_;
        return object;
      }
      Fail("expected ',' or '}'");
    }
  }

  Json ParseArray(int depth) {
    ++position_;  // [
    Json array = Json::Array();
    SkipSpace();
    if (Peek() == ']') {
      ++position_;
      return array;
    }
    for (;;) {
      array.array_.push_back(ParseValue(depth + 1));
      SkipSpace();
      if (Peek() == ',') {
        ++position_;
        continue;
      }
      if (Peek() == ']') {
        ++position_;
        return array;
      }
      Fail("expected ',' or ']'");
    }
  }

  unsigned ParseHex4() {
    if (text_.size() - position_ < 4) Fail("truncated \\u escape");
    unsigned value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[position_++];
      value <<= 4;
      if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
      else Fail("bad hex digit in \\u escape");
    }
    return value;
  }

  static void AppendUtf8(std::string& out, unsigned code_point) {
    if (code_point < 0x80) {
      out += static_cast<char>(code_point);
    } else if (code_point < 0x800) {
      out += static_cast<char>(0xc0 | (code_point >> 6));
      out += static_cast<char>(0x80 | (code_point & 0x3f));
    } else if (code_point < 0x10000) {
      out += static_cast<char>(0xe0 | (code_point >> 12));
      out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code_point & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (code_point >> 18));
      out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code_point & 0x3f));
    }
  }

  std::string ParseString() {
    ++position_;  // "
    std::string out;
    for (;;) {
      if (position_ >= text_.size()) Fail("unterminated string");
      const char c = text_[position_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) Fail("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (position_ >= text_.size()) Fail("unterminated escape");
      const char e = text_[position_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code_point = ParseHex4();
          if (code_point >= 0xd800 && code_point < 0xdc00) {
            if (!Consume("\\u")) Fail("lone high surrogate");
            const unsigned low = ParseHex4();
            if (low < 0xdc00 || low >= 0xe000) Fail("bad low surrogate");
            code_point = 0x10000 + ((code_point - 0xd800) << 10) + (low - 0xdc00);
          } else if (code_point >= 0xdc00 && code_point < 0xe000) {
            Fail("lone low surrogate");
          }
          AppendUtf8(out, code_point);
          break;
        }
        default:
          Fail(std::string("bad escape '\\") + e + "'");
      }
    }
  }

  Json ParseNumber() {
    const size_t start = position_;
    if (Peek() == '-') ++position_;
    if (Peek() == '0') {
      ++position_;
    } else if (Peek() >= '1' && Peek() <= '9') {
      while (Peek() >= '0' && Peek() <= '9') ++position_;
    } else {
      Fail("bad number");
    }
    if (Peek() == '.') {
      ++position_;
      if (!(Peek() >= '0' && Peek() <= '9')) Fail("bad fraction");
      while (Peek() >= '0' && Peek() <= '9') ++position_;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++position_;
      if (Peek() == '+' || Peek() == '-') ++position_;
      if (!(Peek() >= '0' && Peek() <= '9')) Fail("bad exponent");
      while (Peek() >= '0' && Peek() <= '9') ++position_;
    }
    const std::string literal(text_.substr(start, position_ - start));
    const double value = std::strtod(literal.c_str(), nullptr);
    if (!std::isfinite(value)) Fail("number out of range");
    return Json(value);
  }

  std::string_view text_;
  size_t position_ = 0;
};

Json Json::Parse(std::string_view text) { return JsonParser(text).ParseDocument(); }

namespace {

void SerializeString(const std::string& value, std::string& out) {
  out += '"';
  for (char c : value) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escape[8];
          std::snprintf(escape, sizeof(escape), "\\u%04x", static_cast<unsigned>(c));
          out += escape;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

void SerializeTo(const Json& value, std::string& out) {
  switch (value.type()) {
    case Json::Type::kNull: out += "null"; break;
    case Json::Type::kBool: out += value.as_bool() ? "true" : "false"; break;
    case Json::Type::kNumber: {
      const double number = value.as_number();
      char text[32];
      if (std::nearbyint(number) == number && std::fabs(number) < 9.007199254740992e15) {
        std::snprintf(text, sizeof(text), "%lld", static_cast<long long>(number));
      } else {
        std::snprintf(text, sizeof(text), "%.17g", number);
      }
      out += text;
      break;
    }
    case Json::Type::kString: SerializeString(value.as_string(), out); break;
    case Json::Type::kArray: {
      out += '[';
      bool first = true;
      for (const Json& item : value.as_array()) {
        if (!first) out += ',';
        first = false;
        SerializeTo(item, out);
      }
      out += ']';
      break;
    }
    case Json::Type::kObject: {
      out += '{';
      bool first = true;
      for (const auto& member : value.as_object()) {
        if (!first) out += ',';
        first = false;
        SerializeString(member.first, out);
        out += ':';
        SerializeTo(member.second, out);
      }
      out += '}';
      break;
    }
  }
}

}  // namespace

std::string Json::Serialize() const {
  std::string out;
  SerializeTo(*this, out);
  return out;
}

const Json* Json::Find(const std::string& key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const auto& member : object_)
    if (member.first == key) return &member.second;
  return nullptr;
}

Json& Json::Set(const std::string& key, Json value) {
  type_ = Type::kObject;
  for (auto& member : object_) {
    if (member.first == key) {
      member.second = std::move(value);
      return *this;
    }
  }
  object_.emplace_back(key, std::move(value));
  return *this;
}

Json& Json::Push(Json value) {
  type_ = Type::kArray;
  array_.push_back(std::move(value));
  return *this;
}

}  // namespace smolvm
