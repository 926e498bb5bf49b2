"""The foundation every layer uses: params (config), paths (layout), the run context, atomic I/O, errors, processes (distributed, launch), the registries and plugins."""
