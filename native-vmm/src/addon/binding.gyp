# The node-addon-api binding: the shim's control surface over smolvm-vmm. It lives here (not in
# native-vmm/) because node-gyp always builds into <dir of binding.gyp>/build, and
# native-vmm/build is CMake's. Built by `npm install` through build.sh in this folder.
{
  "targets": [
    {
      "target_name": "smolvm_vmm_addon",
      "sources": [
        "addon.cc",
        "spawn.cc",
        "frame_io.cc",
        "vmm_session.cc",
        "host_probe.cc",
      ],
      # node-addon-api's headers directly (its gyp target would drop a stamp file into a
      # node_modules/ next to this file); C++ exceptions on, as its except.gypi does.
      "include_dirs": ["..", "<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=gnu++17", "-fexceptions", "-Wall", "-Wextra", "-Werror", "-fvisibility=hidden"],
    },
  ],
}
