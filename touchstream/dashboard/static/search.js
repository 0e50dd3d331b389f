// The search box on every page: opens a customer's page (Customer 360).
"use strict";

for (const form of document.querySelectorAll("form[data-search]")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = form.querySelector("input").value.trim();
    if (!id) return;
    const token = new URLSearchParams(location.search).get("token");
    location.href = `/customers/${encodeURIComponent(id)}` + (token ? `?token=${encodeURIComponent(token)}` : "");
  });
}

// A link to a customer's page, carrying the dashboard token if there is one.
function customerLink(id) {
  const a = document.createElement("a");
  const token = new URLSearchParams(location.search).get("token");
  a.href = `/customers/${encodeURIComponent(id)}` + (token ? `?token=${encodeURIComponent(token)}` : "");
  a.textContent = id;
  a.className = "customer-link";
  return a;
}

// Page links keep the dashboard token.
for (const link of document.querySelectorAll("a[data-keep-token]")) {
  const token = new URLSearchParams(location.search).get("token");
  if (token) link.href += `?token=${encodeURIComponent(token)}`;
}
