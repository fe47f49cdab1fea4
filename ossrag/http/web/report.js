// Sorts the eval reports' summary tables; inlined into each report by ossrag.report.
document.querySelectorAll("table.sortable").forEach((table) => {
  const heads = [...table.tHead.rows[0].cells];
  heads.forEach((th, col) => th.querySelector("button").addEventListener("click", () => {
    const dir = th.getAttribute("aria-sort") === "descending" ? "ascending" : "descending";
    heads.forEach((h) => h.setAttribute("aria-sort", "none"));
    th.setAttribute("aria-sort", dir);
    const numeric = th.classList.contains("num");
    const key = (row) => row.cells[col].dataset.sort;
    const rows = [...table.tBodies[0].rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === "" || y === "") return (x === "") - (y === "");  // missing values last
      const d = numeric ? Number(x) - Number(y) : x.localeCompare(y);
      return dir === "ascending" ? d : -d;
    });
    table.tBodies[0].append(...rows);
  }));
});
