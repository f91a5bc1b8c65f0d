{
  "targets": [
    {
      "target_name": "sendfile",
      "conditions": [["OS=='linux'", { "sources": ["native/sendfile.c"] }]],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
