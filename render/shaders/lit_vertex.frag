#version 330 core
// The colour lit per vertex (lit_vertex.vert), interpolated across the triangle.
in vec4 lit_color;
out vec4 frag_color;

void main()
{
    frag_color = lit_color;
}
