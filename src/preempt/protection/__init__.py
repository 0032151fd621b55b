"""The sender's side as a tool: a folder of photos protected into 8-bit PNGs with a manifest, and checked again."""
