"""The report's one stylesheet, and the rules that keep every table cell's content inside it.

Why no cell can overflow:
- no cell has a width or max-width, and tables use the automatic layout (nbconvert's lab theme
  sets ``table-layout: fixed``), so the browser never makes a column narrower than its widest
  unbreakable piece;
- numbers and names (``.ckd-n``) never break inside; other text wraps at spaces, and in the
  small print (settings, notes, run lists, paths) a long token without spaces breaks anywhere;
- a table wider than the page scrolls sideways inside its own box (``.ckd-scroll``) instead of
  widening the page.
``tests/test_report_browser.py`` measures every cell in Chromium at 1400 and 1000 px.
"""

CSS = """
<style>
/* "table.ckd.ckd" outranks the notebook theme's own table rules (fixed layout, right-aligned). */
.ckd-report, table.ckd.ckd { font-family: system-ui, -apple-system, "Segoe UI", Roboto,
  Helvetica, Arial, sans-serif; }
.ckd-banner { border: 5px solid #b3001b; background: #fff1f1; color: #7a0012;
  padding: 16px 20px; margin: 8px 0 18px 0; border-radius: 6px; }
.ckd-banner.ckd-full { border-color: #0b6e3b; background: #effaf3; color: #064023; }
.ckd-banner .ckd-headline { font-size: 1.55em; font-weight: 800; line-height: 1.25; }
.ckd-banner .ckd-detail { font-size: 1.0em; margin-top: 8px; }
.ckd-scroll { overflow-x: auto; max-width: 100%; }
table.ckd.ckd { border-collapse: collapse; margin: 6px 0 4px 0; font-size: 12px;
  table-layout: auto; width: auto; }
table.ckd.ckd th, table.ckd.ckd td { border: 1px solid #c8c8c8; padding: 3px 5px;
  text-align: left; vertical-align: top; line-height: 1.3; max-width: none;
  white-space: normal; overflow-wrap: break-word; }
table.ckd.ckd th { background: #f2f4f7; }
table.ckd.ckd td.ckd-right, table.ckd.ckd th.ckd-right { text-align: right; }
table.ckd.ckd td.ckd-pair { font-weight: 600; }
table.ckd.ckd .ckd-n { white-space: nowrap; }
table.ckd.ckd .ckd-v { font-weight: 700; font-size: 13px; }
table.ckd.ckd .ckd-s { color: #555; font-size: 11px; overflow-wrap: anywhere; }
table.ckd.ckd .ckd-r { color: #555; font-size: 11px; overflow-wrap: anywhere; }
table.ckd.ckd .ckd-i { color: #555; font-size: 11px; font-style: italic;
  overflow-wrap: anywhere; }
table.ckd.ckd .ckd-b { color: #444; font-size: 11px; border-top: 1px dotted #bbb;
  margin-top: 3px; padding-top: 2px; }
table.ckd.ckd .ckd-lit { color: #1d3a6b; font-size: 11px; }
table.ckd.ckd .ckd-paper { color: #5b2c83; font-size: 11px; }
table.ckd.ckd ul.ckd-list { margin: 0; padding-left: 1.1em; }
.ckd-ns { color: #9a5b00; font-style: italic; }
table.ckd.ckd a.ckd-run { font-family: ui-monospace, Menlo, Consolas, monospace;
  font-size: 10px; }
table.ckd.ckd .ckd-r a.ckd-run { white-space: nowrap; }
.ckd-swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px;
  margin-right: 4px; vertical-align: baseline; }
.ckd-pos { color: #0a6b2d; font-weight: 600; }
.ckd-neg { color: #a3001a; font-weight: 600; }
.ckd-empty { color: #999; }
.ckd-warn { color: #a3001a; font-weight: 700; }
.ckd-note { color: #444; font-size: 12px; margin: 2px 0 10px 0; overflow-wrap: anywhere; }
.ckd-cmd { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 11px;
  background: #f6f6f6; padding: 1px 4px; overflow-wrap: anywhere; }
ol.ckd-sources { font-size: 11px; color: #333; margin-top: 2px; }
h2.ckd-h, h3.ckd-h { margin-top: 22px; }
.ckd-verdict { display: inline-block; padding: 1px 7px; border-radius: 10px; font-weight: 700;
  font-size: 12px; white-space: nowrap; border: 1px solid transparent; }
.ckd-verdict.ckd-supported { background: #e3f5e9; color: #0a5a27; border-color: #7cc596; }
.ckd-verdict.ckd-not-supported { background: #fde8ea; color: #8f0017; border-color: #e3919c; }
.ckd-verdict.ckd-inconclusive { background: #fff4dc; color: #7a4b00; border-color: #e3c27a; }
.ckd-verdict.ckd-not-run { background: #f1f1f1; color: #666; border-color: #d0d0d0; }
.ckd-summary { border: 1px solid #c8d3e6; background: #f6f9fe; border-radius: 6px;
  padding: 10px 16px; margin: 6px 0 14px 0; font-size: 13px; color: #222; }
.ckd-summary h3 { margin: 6px 0 4px 0; font-size: 15px; }
.ckd-summary ul { margin: 2px 0 6px 0; padding-left: 1.2em; }
.ckd-summary li { margin: 1px 0; }
.ckd-rule { font-size: 12px; color: #333; background: #fafafa; border-left: 3px solid #999;
  padding: 4px 10px; margin: 4px 0 10px 0; }
table.ckd.ckd .ckd-tier { font-weight: 700; }
table.ckd.ckd .ckd-cmp { margin-bottom: 5px; }
table.ckd.ckd .ckd-cmp + .ckd-cmp { border-top: 1px dotted #bbb; padding-top: 3px; }
</style>
"""
