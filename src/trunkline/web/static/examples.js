// Trunkline examples gallery: the "Copy" buttons put the command on the clipboard.
"use strict";

for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "Copied";
    } catch (_) {
      button.textContent = "Select it"; // no clipboard (an http:// page on another host)
    }
    setTimeout(() => (button.textContent = "Copy"), 1500);
  });
}
