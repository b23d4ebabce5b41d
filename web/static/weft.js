// Weft: theme toggle, keyboard shortcuts, and the trace waterfall's
// collapsing and detail rows. No framework; every page works without it.
(function () {
  "use strict";
  var root = document.documentElement;
  var saved = localStorage.getItem("weft-theme");
  if (saved) root.setAttribute("data-theme", saved);

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("theme-toggle");
    if (toggle) toggle.addEventListener("click", function () {
      var dark = root.getAttribute("data-theme") === "dark" ||
        (!root.getAttribute("data-theme") && matchMedia("(prefers-color-scheme: dark)").matches);
      var next = dark ? "light" : "dark";
      root.setAttribute("data-theme", next);
      localStorage.setItem("weft-theme", next);
    });

    var waterfall = document.querySelector(".waterfall");
    if (waterfall) setUpWaterfall(waterfall);

    document.addEventListener("keydown", function (event) {
      var typing = /INPUT|TEXTAREA|SELECT/.test(event.target.tagName);
      if (event.key === "/" && !typing) {
        var first = document.querySelector("form input, form textarea");
        if (first) { first.focus(); event.preventDefault(); }
      }
      if (typing && event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.form) {
        event.target.form.submit();
      }
      if (!typing && waterfall && (event.key === "e" || event.key === "c")) {
        setAll(waterfall, event.key === "c");
      }
    });
  });

  // Rows by parent id, built once per shape of the table (a large trace has
  // thousands of rows: one scan, not one per row).
  function children(table, id) {
    if (!table.kids) {
      table.kids = {};
      table.querySelectorAll("tr.span-row").forEach(function (row) {
        (table.kids[row.dataset.parent] = table.kids[row.dataset.parent] || []).push(row);
      });
    }
    return table.kids[id] || [];
  }

  // Hides or shows the rows below `row`; a shown row keeps its own collapsed state.
  function setSubtree(table, row, hidden) {
    children(table, row.dataset.id).forEach(function (child) {
      child.classList.toggle("hidden", hidden);
      var detail = document.getElementById("detail-" + child.dataset.id);
      if (hidden && detail) detail.classList.add("hidden");
      if (hidden || child.dataset.collapsed !== "true") setSubtree(table, child, hidden);
    });
  }

  // A collapsed subtree of a large trace arrives inside a <template>: its rows
  // are built only when it is first opened.
  function materialize(table, row) {
    var template = table.querySelector('template[data-for="' + row.dataset.id + '"]');
    if (template) { template.replaceWith(template.content); table.kids = null; }
  }

  function materializeAll(table) {
    var template;
    while ((template = table.querySelector("template[data-for]"))) template.replaceWith(template.content);
    table.kids = null;
  }

  function setCollapsed(table, row, collapsed) {
    if (!collapsed) materialize(table, row);
    row.dataset.collapsed = collapsed ? "true" : "false";
    var toggle = row.querySelector(".toggle");
    if (toggle && toggle.textContent.trim()) toggle.textContent = collapsed ? "▸" : "▾";
    setSubtree(table, row, collapsed);
  }

  // Everything folded (only roots shown) or everything open, in one pass.
  function setAll(table, collapsed) {
    if (!collapsed) materializeAll(table);
    table.querySelectorAll("tr.span-row").forEach(function (row) {
      var toggle = row.querySelector(".toggle");
      if (toggle && toggle.textContent.trim()) {
        row.dataset.collapsed = collapsed ? "true" : "false";
        toggle.textContent = collapsed ? "▸" : "▾";
      }
      if (row.dataset.parent !== "") row.classList.toggle("hidden", collapsed);
    });
    if (collapsed) table.querySelectorAll("tr.detail").forEach(function (detail) { detail.classList.add("hidden"); });
  }


  function setUpWaterfall(table) {
    table.querySelectorAll("tr.span-row").forEach(function (row) {
      if (row.dataset.collapsed === "true") setSubtree(table, row, true);
    });
    table.addEventListener("click", function (event) {
      var row = event.target.closest("tr.span-row");
      if (!row || event.target.closest("a")) return;
      if (event.target.classList.contains("toggle")) {
        setCollapsed(table, row, row.dataset.collapsed !== "true");
        return;
      }
      var detail = document.getElementById("detail-" + row.dataset.id);
      if (detail) detail.classList.toggle("hidden");
      row.classList.toggle("selected");
    });
    var expand = document.getElementById("expand-all");
    if (expand) expand.addEventListener("click", function () { setAll(table, false); });
    var collapse = document.getElementById("collapse-all");
    if (collapse) collapse.addEventListener("click", function () { setAll(table, true); });
    if (location.hash.indexOf("#span-") === 0) {
      if (!document.getElementById(location.hash.slice(1))) materializeAll(table);
      var target = document.getElementById(location.hash.slice(1));
      if (target) { target.classList.remove("hidden"); target.classList.add("selected"); target.scrollIntoView({ block: "center" }); }
    }
  }
})();
