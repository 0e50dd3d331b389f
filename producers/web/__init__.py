"""The website snippet (`touchstream.js`), served by the collector at /v1/touchstream.js."""
