// The `style` enhancer: appends the asset type's `style` to the prompt and carries its
// `negative` into the negative prompt, so a manifest states its art direction once per type.
#include <kiln/kiln.hpp>
#include <string>

namespace {

// Appends `part` unless the text already ends with it (running twice changes nothing).
void append(std::string& text, std::string_view part, std::string_view separator) {
  if (part.empty())
    return;
  if (text.size() >= part.size() && text.compare(text.size() - part.size(), part.size(), part) == 0)
    return;
  if (!text.empty())
    text += separator;
  text += part;
}

class Style : public kiln::Enhancer {
public:
  explicit Style(const kiln::Context& context)
      : m_separator(context.options().get_string("separator")) {}

  static kiln::OptionSchema options() {
    return {
        {"separator", "text placed between the prompt and the style", KILN_OPTION_STRING, ", "}};
  }

  kiln::Prompt enhance(const kiln::Asset& asset, kiln::Prompt current) override {
    append(current.positive, asset.style, m_separator);
    append(current.negative, asset.negative, ", ");
    return current;
  }

private:
  std::string m_separator;
};

} // namespace

KILN_PLUGIN(Style, "style", "1.0.0",
            "Appends the type's style to the prompt and carries its negative prompt")
