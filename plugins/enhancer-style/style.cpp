// The `style` enhancer: appends the asset type's `style` and then the asset's own `modifiers`
// to the prompt, so a manifest states its art direction once per type and each asset only
// what sets it apart. Negative words are the `negative` enhancer's business, never the prompt's.
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
    std::string modifiers;
    for (auto& m : asset.modifiers)
      append(modifiers, m, ", ");
    append(current.positive, modifiers, m_separator);
    return current;
  }

private:
  std::string m_separator;
};

} // namespace

// 1.0.0 still: for a manifest without `modifiers` the prompt is what 1.0.0 made (the asset's
// negative reaches the request without this enhancer), so no paid image is made again.
KILN_PLUGIN(Style, "style", "1.0.0", "Appends the type's style and the asset's modifiers")
