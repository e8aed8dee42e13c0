// MathJax configuration for pymdownx.arithmatex (generic mode): \( ... \) inline, \[ ... \] display.
// MathJax itself is served from this site (assets/mathjax/, copied from the docs extra's package), never a CDN.
window.MathJax = {
  loader: {load: ["[tex]/textmacros"]},
  tex: {
    packages: {"[+]": ["textmacros"], "[-]": ["noundefined"]},   // \_ in \text{...}; an unknown macro is an error
    inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]],
    processEscapes: true, processEnvironments: true
  },
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex"}
};
document$.subscribe(() => {
  if (!window.MathJax.typesetPromise) return;   // first page: MathJax typesets it on start-up
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
