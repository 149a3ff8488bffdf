# Warnings and sanitizers applied to every target vvu builds (never to consumers).
function(vvu_project_flags target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic
    $<$<BOOL:${VVU_WERROR}>:-Werror>)
  if(VVU_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${VVU_SANITIZE}
      -fno-omit-frame-pointer -fno-sanitize-recover=all)
    target_link_options(${target} PRIVATE -fsanitize=${VVU_SANITIZE})
  endif()
endfunction()
